//! Forming STOW-RS batches from due items.

use std::collections::{HashMap, HashSet};

use crate::outbox::{DueItem, Priority};

/// Bounds of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most instances per request.
    pub max_instances: usize,
    /// Most bytes per request (an instance larger than this is sent alone).
    pub max_bytes: u64,
}

/// Group `due` (already ordered STAT first, then oldest) into at most `max_batches`
/// batches.
///
/// - A batch holds one priority only, so a STAT request is never slowed down by
///   routine instances riding along.
/// - Items marked `solo` (the hub refused them inside a larger request) go alone.
/// - Items already in flight, or a second item with a SOP Instance UID that is in
///   flight or already batched, are skipped: two versions of one instance must not
///   race each other to the hub, and a response must name each instance once.
pub fn form_batches(
    due: Vec<DueItem>,
    busy_ids: &HashSet<i64>,
    busy_uids: &HashSet<String>,
    limits: BatchLimits,
    max_batches: usize,
) -> Vec<Vec<DueItem>> {
    let mut batches: Vec<Vec<DueItem>> = Vec::new();
    let mut bytes: Vec<u64> = Vec::new();
    let mut open: HashMap<Priority, usize> = HashMap::new();
    let mut taken_uids: HashSet<String> = HashSet::new();
    for item in due {
        if busy_ids.contains(&item.id)
            || busy_uids.contains(&item.sop_instance_uid)
            || taken_uids.contains(&item.sop_instance_uid)
        {
            continue;
        }
        if !item.solo {
            if let Some(&i) = open.get(&item.priority) {
                if batches[i].len() < limits.max_instances
                    && bytes[i].saturating_add(item.size) <= limits.max_bytes
                {
                    bytes[i] += item.size;
                    taken_uids.insert(item.sop_instance_uid.clone());
                    batches[i].push(item);
                    continue;
                }
                open.remove(&item.priority);
            }
        }
        if batches.len() >= max_batches {
            // Full: later (lower priority or newer) items wait for the next round, but
            // keep scanning so the open batches can still be topped up.
            continue;
        }
        if !item.solo {
            open.insert(item.priority, batches.len());
        }
        bytes.push(item.size);
        taken_uids.insert(item.sop_instance_uid.clone());
        batches.push(vec![item]);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, uid: &str, size: u64, priority: Priority) -> DueItem {
        DueItem {
            id,
            sop_instance_uid: uid.into(),
            study_uid: "1.2.3".into(),
            calling_ae: "CT".into(),
            path: format!("spool/{id}.dcm"),
            size,
            priority,
            attempts: 0,
            solo: false,
            dataset_offset: 0,
            sha256: String::new(),
        }
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_instances: 3,
        max_bytes: 1000,
    };

    fn ids(batches: &[Vec<DueItem>]) -> Vec<Vec<i64>> {
        batches
            .iter()
            .map(|b| b.iter().map(|i| i.id).collect())
            .collect()
    }

    #[test]
    fn respects_instance_and_byte_limits() {
        let due = (1..=7)
            .map(|i| item(i, &format!("1.{i}"), 300, Priority::Routine))
            .collect();
        let b = form_batches(due, &HashSet::new(), &HashSet::new(), LIMITS, 10);
        assert_eq!(ids(&b), vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
        let due = (1..=4)
            .map(|i| item(i, &format!("1.{i}"), 450, Priority::Routine))
            .collect();
        let b = form_batches(due, &HashSet::new(), &HashSet::new(), LIMITS, 10);
        assert_eq!(ids(&b), vec![vec![1, 2], vec![3, 4]]);
    }

    #[test]
    fn an_oversized_instance_goes_alone() {
        let due = vec![
            item(1, "1.1", 100, Priority::Routine),
            item(2, "1.2", 5000, Priority::Routine),
            item(3, "1.3", 100, Priority::Routine),
        ];
        let b = form_batches(due, &HashSet::new(), &HashSet::new(), LIMITS, 10);
        assert_eq!(ids(&b), vec![vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn stat_first_and_never_mixed_with_routine() {
        // the outbox orders STAT first; batches keep them apart
        let due = vec![
            item(5, "1.5", 10, Priority::Stat),
            item(6, "1.6", 10, Priority::Stat),
            item(1, "1.1", 10, Priority::Routine),
            item(2, "1.2", 10, Priority::Routine),
        ];
        let b = form_batches(due, &HashSet::new(), &HashSet::new(), LIMITS, 10);
        assert_eq!(ids(&b), vec![vec![5, 6], vec![1, 2]]);
        assert!(b[0].iter().all(|i| i.priority == Priority::Stat));
        // with room for one request only, it is the STAT one
        let due = vec![
            item(5, "1.5", 10, Priority::Stat),
            item(1, "1.1", 10, Priority::Routine),
        ];
        let b = form_batches(due, &HashSet::new(), &HashSet::new(), LIMITS, 1);
        assert_eq!(ids(&b), vec![vec![5]]);
    }

    #[test]
    fn solo_items_are_sent_alone() {
        let mut lonely = item(2, "1.2", 10, Priority::Routine);
        lonely.solo = true;
        let due = vec![
            item(1, "1.1", 10, Priority::Routine),
            lonely,
            item(3, "1.3", 10, Priority::Routine),
        ];
        let b = form_batches(due, &HashSet::new(), &HashSet::new(), LIMITS, 10);
        assert_eq!(ids(&b), vec![vec![1, 3], vec![2]]);
    }

    #[test]
    fn in_flight_items_and_uids_are_skipped() {
        let due = vec![
            item(1, "1.1", 10, Priority::Routine),
            item(2, "1.2", 10, Priority::Routine),
            item(3, "1.3", 10, Priority::Routine),
            item(4, "1.3", 10, Priority::Routine), // second version of 1.3
        ];
        let busy_ids = HashSet::from([1]);
        let busy_uids = HashSet::from(["1.2".to_string()]);
        let b = form_batches(due, &busy_ids, &busy_uids, LIMITS, 10);
        assert_eq!(ids(&b), vec![vec![3]]);
    }

    #[test]
    fn batch_count_is_bounded() {
        let due = (1..=20)
            .map(|i| item(i, &format!("1.{i}"), 10, Priority::Routine))
            .collect();
        let b = form_batches(due, &HashSet::new(), &HashSet::new(), LIMITS, 2);
        assert_eq!(ids(&b), vec![vec![1, 2, 3], vec![4, 5, 6]]);
    }
}
