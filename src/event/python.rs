//! Reading a Python dict in place, under the GIL: only the keys asked for
//! are looked up, no copy of the rest (a 5 MB comment list stays in Python).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};

use super::Node;

thread_local! {
    /// Dict keys as interned Python strs, made once per thread rather than per lookup.
    static KEYS: std::cell::RefCell<std::collections::HashMap<String, Py<PyString>>> = Default::default();
}

fn interned<'py>(py: Python<'py>, key: &str) -> Bound<'py, PyString> {
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some(s) = keys.get(key) {
            return s.bind(py).clone();
        }
        let s = PyString::intern(py, key);
        keys.insert(key.to_string(), s.clone().unbind());
        s
    })
}

impl<'py> Node for Bound<'py, PyAny> {
    fn get(&self, key: &str) -> Option<Self> {
        let dict = self.cast::<PyDict>().ok()?;
        dict.get_item(interned(self.py(), key)).ok()?.filter(|v| !v.is_none())
    }
    fn text(&self, max: usize) -> Option<String> {
        let s = self.cast::<PyString>().ok()?;
        // Characters first (no copy): a UTF-8 string has at least as many bytes.
        if s.len().ok()? > max {
            return None;
        }
        s.to_cow().ok().filter(|t| t.len() <= max).map(|t| t.into_owned())
    }
    fn uint(&self) -> Option<u64> {
        // A Python bool is an int; a build number is not a bool.
        if self.is_instance_of::<PyBool>() {
            return None;
        }
        self.extract().ok()
    }
    fn boolean(&self) -> Option<bool> {
        self.cast::<PyBool>().ok().map(|b| b.is_true())
    }
    fn last(&self) -> Option<Self> {
        let list = self.cast::<PyList>().ok()?;
        list.get_item(list.len().checked_sub(1)?).ok()
    }
}
