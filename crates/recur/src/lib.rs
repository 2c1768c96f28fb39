//! Recur
