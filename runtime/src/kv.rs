//! Small per-flow key-value state (`voxide:flow/kv`), shared by all calls of one flow within
//! one tenant. In memory for now; the control-plane store will back it with the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Limits per namespace.
pub const MAX_KEY: usize = 256;
pub const MAX_VALUE: usize = 64 * 1024;
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    #[error("key is {0} bytes; keys must be 1-{MAX_KEY} bytes")]
    KeySize(usize),
    #[error("value is {0} bytes; the limit is {MAX_VALUE}")]
    ValueSize(usize),
    #[error("this flow already stores {MAX_KEYS} keys; delete some first")]
    TooManyKeys,
}

/// (tenant, flow).
type NamespaceKey = (String, String);

/// All namespaces of a process. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MemoryKv {
    spaces: Arc<Mutex<HashMap<NamespaceKey, HashMap<String, String>>>>,
}

impl MemoryKv {
    /// The namespace of one flow for one tenant.
    pub fn namespace(&self, tenant: &str, flow: &str) -> KvNamespace {
        KvNamespace { store: self.clone(), name: (tenant.to_owned(), flow.to_owned()) }
    }
}

/// One flow's view of the KV store; everything it does is confined to its namespace.
#[derive(Debug, Clone)]
pub struct KvNamespace {
    store: MemoryKv,
    /// (tenant, flow): a tuple, so no choice of names can make two namespaces collide.
    name: NamespaceKey,
}

impl KvNamespace {
    /// A namespace in a store of its own (tests, one-off runs).
    pub fn isolated() -> Self {
        MemoryKv::default().namespace("local", "flow")
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, String>) -> R) -> R {
        let mut spaces = self.store.spaces.lock().unwrap_or_else(|p| p.into_inner());
        f(spaces.entry(self.name.clone()).or_default())
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.with(|m| m.get(key).cloned())
    }

    pub fn set(&self, key: String, value: String) -> Result<(), KvError> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(KvError::KeySize(key.len()));
        }
        if value.len() > MAX_VALUE {
            return Err(KvError::ValueSize(value.len()));
        }
        self.with(|m| {
            if m.len() >= MAX_KEYS && !m.contains_key(&key) {
                return Err(KvError::TooManyKeys);
            }
            m.insert(key, value);
            Ok(())
        })
    }

    pub fn delete(&self, key: &str) {
        self.with(|m| m.remove(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_isolated_per_tenant_and_flow() {
        let kv = MemoryKv::default();
        let a = kv.namespace("t1", "ivr");
        let b = kv.namespace("t2", "ivr");
        let c = kv.namespace("t1/ivr", "x");
        let d = kv.namespace("t1", "ivr/x");
        c.set("k".into(), "c".into()).unwrap();
        assert_eq!(d.get("k"), None, "names containing '/' do not collide");
        a.set("k".into(), "v".into()).unwrap();
        assert_eq!(a.get("k").as_deref(), Some("v"));
        assert_eq!(b.get("k"), None);
        a.delete("k");
        assert_eq!(a.get("k"), None);
    }

    #[test]
    fn limits_are_enforced() {
        let ns = KvNamespace::isolated();
        assert_eq!(ns.set(String::new(), "v".into()), Err(KvError::KeySize(0)));
        assert_eq!(
            ns.set("k".into(), "x".repeat(MAX_VALUE + 1)),
            Err(KvError::ValueSize(MAX_VALUE + 1))
        );
    }
}
