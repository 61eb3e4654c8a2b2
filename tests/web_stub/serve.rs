//! `archipelago serve` for the web tests that include this file with `#[path]` beside
//! `mod common;`: everything is `common::serve`'s, re-exported under the names they use.

pub use crate::common::serve::*;
