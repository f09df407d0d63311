//! Who may hold a connection slot of the DICOM and MLLP ports.
//!
//! A township's CT and LIS must never be locked out by connections that do nothing: 32
//! sockets that never send an A-ASSOCIATE-RQ used to take every association slot for
//! the idle timeout. Three rules, each port with its own [`Admission`]:
//! - a connection has a short deadline to open (send its association request or its
//!   first MLLP frame); the listeners enforce it, see `Config::connection_open_secs`;
//! - one remote address holds at most `per_address` slots;
//! - `reserved` slots are kept for the configured trusted addresses (the modalities and
//!   the LIS), which are limited only by the total.
//!
//! A connection refused here is answered at once (a transient A-ASSOCIATE-RJ, or a
//! closed MLLP connection) so a real sender retries instead of hanging.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a connection gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Every slot open to this address is taken.
    #[error("all {0} connection slots are taken")]
    Full(usize),
    /// This address holds its share already.
    #[error("this address already holds {0} connections")]
    AddressLimit(usize),
}

/// The slots of one listening port.
#[derive(Debug)]
pub struct Admission {
    total: usize,
    per_address: usize,
    reserved: usize,
    trusted: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    /// `total` slots, at most `per_address` per untrusted address, and `reserved` of
    /// them only for `trusted` addresses (none reserved when no address is trusted).
    pub fn new(total: usize, per_address: usize, reserved: usize, trusted: Vec<IpAddr>) -> Self {
        let reserved = if trusted.is_empty() {
            0
        } else {
            reserved.min(total.saturating_sub(1))
        };
        Admission {
            total,
            per_address: per_address.max(1),
            reserved,
            trusted,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a connection from `peer`, held until the [`Slot`] is dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let all: usize = open.values().sum();
        let trusted = self.trusted.contains(&peer);
        if trusted {
            if all >= self.total {
                return Err(Refused::Full(self.total));
            }
        } else {
            let shared = self.total - self.reserved;
            // Trusted peers beyond the reserve use the shared slots too.
            let used_by_trusted: usize = open
                .iter()
                .filter(|(a, _)| self.trusted.contains(a))
                .map(|(_, n)| n)
                .sum();
            let used_shared = all - used_by_trusted + used_by_trusted.saturating_sub(self.reserved);
            if used_shared >= shared {
                return Err(Refused::Full(shared));
            }
            if open.get(&peer).copied().unwrap_or(0) >= self.per_address {
                return Err(Refused::AddressLimit(self.per_address));
            }
        }
        *open.entry(peer).or_insert(0) += 1;
        Ok(Slot {
            admission: Arc::clone(self),
            peer,
        })
    }
}

/// A held connection slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let a = Arc::new(Admission::new(8, 3, 0, Vec::new()));
        let held: Vec<Slot> = (0..3).map(|_| a.admit(ip(9)).expect("slot")).collect();
        assert_eq!(a.admit(ip(9)).unwrap_err(), Refused::AddressLimit(3));
        assert!(a.admit(ip(10)).is_ok(), "another address still gets in");
        drop(held);
        assert!(a.admit(ip(9)).is_ok(), "freed slots are free again");
    }

    #[test]
    fn trusted_addresses_keep_their_reserve_when_the_rest_is_full() {
        let ct = ip(1);
        let a = Arc::new(Admission::new(6, 1, 2, vec![ct]));
        // Four strangers take the four shared slots.
        let strangers: Vec<Slot> = (20..24).map(|n| a.admit(ip(n)).expect("shared")).collect();
        assert_eq!(a.admit(ip(30)).unwrap_err(), Refused::Full(4));
        // The CT gets the reserve, and is not held to one per address.
        let ct_slots: Vec<Slot> = (0..2).map(|_| a.admit(ct).expect("reserved")).collect();
        assert_eq!(a.admit(ct).unwrap_err(), Refused::Full(6));
        drop(strangers);
        // With the strangers gone the CT may use shared slots too, and those count.
        let more: Vec<Slot> = (0..3).map(|_| a.admit(ct).expect("shared")).collect();
        let last = a.admit(ip(40)).expect("one shared slot is left");
        assert_eq!(a.admit(ip(41)).unwrap_err(), Refused::Full(4));
        drop((ct_slots, more, last));
    }

    #[test]
    fn without_trusted_addresses_nothing_is_reserved() {
        let a = Arc::new(Admission::new(2, 2, 5, Vec::new()));
        let _one = a.admit(ip(1)).expect("slot");
        let _two = a.admit(ip(2)).expect("slot");
        assert_eq!(a.admit(ip(3)).unwrap_err(), Refused::Full(2));
    }
}
