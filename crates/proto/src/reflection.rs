//! Server reflection for tongban's servers, as both `grpc.reflection.v1`
//! and `v1alpha` (Python's grpcio-reflection, grpc_cli and several GUI
//! clients speak only `v1alpha`). The exchange and the adapters each list
//! exactly the services they serve, and can describe every tongban proto,
//! health and both reflection protos.

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

/// Largest reflection request read. A request is a symbol or file name:
/// nothing near tonic's 4 MiB default is legitimate, so a larger one is
/// refused undecoded.
pub const REFLECTION_MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The reflection services (v1, v1alpha) of a server serving `services`
/// (full names, e.g. `tongban.v1.Exchange`).
#[allow(clippy::type_complexity)]
pub fn reflection_services(
    services: &[&str],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    Error,
> {
    let builder = || {
        let mut builder = Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for name in services {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    Ok((
        builder()
            .build_v1()?
            .max_decoding_message_size(REFLECTION_MAX_REQUEST_BYTES),
        builder()
            .build_v1alpha()?
            .max_decoding_message_size(REFLECTION_MAX_REQUEST_BYTES),
    ))
}
