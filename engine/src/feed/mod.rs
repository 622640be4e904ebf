//! Feed edge: decoding (sans-IO) and the ingester thread.

pub mod decode;
pub mod error;
pub mod ingest;
mod scan;
mod stamped;
