//! patchgap.v1: the wire types and gRPC services. This is the only crate that
//! knows prost and tonic codegen; everything else uses the generated types.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("patchgap.v1");
}

/// The encoded FileDescriptorSet of every patchgap.v1 file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("patchgap_v1_descriptor");

/// gRPC server reflection services (v1 and v1alpha), so that grpcurl and
/// generated clients in any language can discover the API.
pub mod reflection {
    use tonic_reflection::server::{v1, v1alpha};

    pub fn v1() -> v1::ServerReflectionServer<impl v1::ServerReflection> {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(super::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the embedded descriptor set is valid")
    }

    pub fn v1alpha() -> v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection> {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(super::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("the embedded descriptor set is valid")
    }
}

/// Package URLs: built by the agent, parsed from what a responder types.
pub mod purl;

/// Milliseconds since the epoch, for every crate.
pub mod time;

/// The agent's stream, sending messages it has already encoded.
pub mod encoded;

/// Artifact tables: each artifact once per message, processes refer to it.
pub mod artifacts;

/// Re-exported so other crates can size and encode messages without knowing
/// prost themselves.
pub use prost::Message;

/// The reflection protocol's own messages and clients, for tests and tools.
pub use tonic_reflection::pb as reflection_pb;
