//! Feed edge: decoding (sans-IO) and the ingester thread.

pub(crate) mod conflate;
pub mod decode;
pub mod error;
pub mod ingest;
mod scan;
pub mod ws;
