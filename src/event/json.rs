//! Reading a `serde_json::Value` (tests, fuzzing, the CLI's files).

use super::Node;

impl Node for &serde_json::Value {
    fn get(&self, key: &str) -> Option<Self> {
        self.as_object()?.get(key).filter(|v| !v.is_null())
    }
    fn text(&self, max: usize) -> Option<String> {
        self.as_str().filter(|s| s.len() <= max).map(str::to_owned)
    }
    fn uint(&self) -> Option<u64> {
        self.as_u64()
    }
    fn boolean(&self) -> Option<bool> {
        self.as_bool()
    }
    fn last(&self) -> Option<Self> {
        self.as_array()?.last()
    }
}
