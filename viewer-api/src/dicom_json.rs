//! Writing DICOM JSON (PS3.18 F.2) attributes from indexed values.

use serde_json::{json, Map, Value};

/// A DICOM JSON object under construction.
#[derive(Debug, Default)]
pub struct JsonDataset(pub Map<String, Value>);

impl JsonDataset {
    /// Empty data set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A string-valued attribute (UI, DA, TM, CS, LO, SH, ...); absent values stay absent.
    pub fn text(&mut self, tag: &str, vr: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            let values: Vec<Value> = v.split('\\').map(|s| Value::from(s.trim())).collect();
            self.0
                .insert(tag.into(), json!({"vr": vr, "Value": values}));
        }
        self
    }

    /// A multi-valued string attribute.
    pub fn texts(&mut self, tag: &str, vr: &str, values: &[String]) -> &mut Self {
        if !values.is_empty() {
            self.0
                .insert(tag.into(), json!({"vr": vr, "Value": values}));
        }
        self
    }

    /// A person name, split into its alphabetic / ideographic / phonetic groups.
    pub fn person_name(&mut self, tag: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            let mut groups = v.split('=');
            let mut pn = Map::new();
            for key in ["Alphabetic", "Ideographic", "Phonetic"] {
                match groups.next() {
                    Some(g) if !g.is_empty() => {
                        pn.insert(key.into(), Value::from(g));
                    }
                    _ => {}
                }
            }
            self.0
                .insert(tag.into(), json!({"vr": "PN", "Value": [pn]}));
        }
        self
    }

    /// An integer attribute with a numeric VR (IS, US, UL).
    pub fn int(&mut self, tag: &str, vr: &str, value: Option<i64>) -> &mut Self {
        if let Some(v) = value {
            self.0.insert(tag.into(), json!({"vr": vr, "Value": [v]}));
        }
        self
    }

    /// Copy the requested tags from a stored DICOM JSON object where this one lacks them.
    pub fn include_from(&mut self, stored: &Map<String, Value>, tags: &[String]) -> &mut Self {
        for tag in tags {
            if !self.0.contains_key(tag) {
                if let Some(v) = stored.get(tag) {
                    self.0.insert(tag.clone(), v.clone());
                }
            }
        }
        self
    }

    /// Copy every top-level attribute of a stored object that this one lacks.
    pub fn include_all_from(&mut self, stored: &Map<String, Value>) -> &mut Self {
        for (tag, v) in stored {
            self.0.entry(tag.clone()).or_insert_with(|| v.clone());
        }
        self
    }

    /// The finished object.
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}
