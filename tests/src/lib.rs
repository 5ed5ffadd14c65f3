//! Shared helpers for the VM tests.
