//! A bounded memo in one execution environment's memory, for rows that are
//! written once and never changed (a card's owner and product, a
//! merchant's category and place). It saves a database round trip per
//! request on the hot path; it is never the record of anything.
//!
//! Bounds: at most `capacity` entries (`quick_cache` evicts the least
//! useful first), each trusted for `ttl` at most, so a row that some future
//! route changes is seen again within that long. Only rows that were found
//! are memoised: a miss always asks the database again, so a card added a
//! moment ago is never answered "not found" from memory.

use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct Memo<K, V> {
    entries: quick_cache::sync::Cache<K, (V, Instant)>,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        assert!(capacity > 0, "a memo holds at least one entry");
        Self { entries: quick_cache::sync::Cache::new(capacity), ttl }
    }

    /// The value stored less than `ttl` ago, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        let (value, stored_at) = self.entries.get(key)?;
        if stored_at.elapsed() < self.ttl {
            Some(value)
        } else {
            self.entries.remove(key);
            None
        }
    }

    pub fn insert(&self, key: K, value: V) {
        self.entries.insert(key, (value, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_what_was_stored_until_it_expires() {
        let memo = Memo::new(10, Duration::from_millis(50));
        assert_eq!(memo.get(&1), None);
        memo.insert(1, "one");
        assert_eq!(memo.get(&1), Some("one"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(memo.get(&1), None, "an expired entry is a miss");
        assert!(memo.is_empty(), "and is dropped");
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let memo = Memo::new(100, Duration::from_secs(60));
        for i in 0..10_000 {
            memo.insert(i, i);
        }
        assert!(memo.len() <= 100, "{} entries", memo.len());
        assert!(!memo.is_empty(), "and still holds the recent ones");
    }
}
