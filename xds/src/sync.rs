//! Locks that outlive a panic: a thread that panicked while holding one leaves data that
//! is still consistent here (every critical section is a plain update), so the guard is
//! taken back instead of spreading the panic to every later caller.
#![allow(clippy::disallowed_methods)] // the one place that calls them

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
