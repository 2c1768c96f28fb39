//! One file per command: each maps its flags to the library's configurations, calls the
//! library, and prints what it returns.

pub mod classify;
pub mod compare;
pub mod eval;
pub mod forecast;
pub mod gradflow;
pub mod inspect;
pub mod sample;
pub mod tag;
pub mod train;
