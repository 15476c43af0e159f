//! Caches bounded by the bytes their entries hold (`quick_cache` with a weight per entry):
//! what is cached from tenants' data must not grow with what tenants send.

/// Weighs a cache entry by the byte count stored beside its value.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByBytes;

impl<K, V> quick_cache::Weighter<K, (u64, V)> for ByBytes {
    fn weight(&self, _key: &K, val: &(u64, V)) -> u64 {
        val.0
    }
}

/// A concurrent cache of `(bytes, value)` entries, bounded by their total bytes.
pub type BytesCache<K, V> = quick_cache::sync::Cache<K, (u64, V), ByBytes>;
