//! tongban's wire contracts, generated from `proto/` at build time.
//!
//! This is the only crate that knows protobuf: the generated code, and
//! [`convert`], the conversions between domain types and their wire form;
//! [`json`], the HTTP/JSON routes and proto3 JSON of the `Exchange` service;
//! [`openapi`], their OpenAPI document.
//! Module paths mirror proto packages because generated code refers across
//! packages with `super::`.

/// Generated `tongban.*` packages.
pub mod tongban {
    /// `tongban.v1`: the exchange, adapter and audit services and their messages.
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
        tonic::include_proto!("tongban.v1");
    }
}

/// Generated `google.*` packages that tongban's protos import.
pub mod google {
    /// `google.rpc`: the rich error model, used for per-item errors in
    /// `GatherResponse`.
    pub mod rpc {
        #![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
        tonic::include_proto!("google.rpc");
    }
}

pub mod convert;
pub mod json;
pub mod openapi;
pub mod reflection;

pub use tongban::v1;

/// The encoded `FileDescriptorSet` of every tongban proto, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tongban_descriptor.bin"));
