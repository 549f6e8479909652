//! The agent's stream with messages it has already encoded.
//!
//! The agent writes every `AgentMessage` to its spool, encoded, before it
//! sends it. Handing tonic the struct made it encode the same message a
//! second time (and keep the struct tree in memory until then): this
//! client sends the spool's bytes as they are. The wire is unchanged: the
//! bytes are an encoded `AgentMessage`, framed by tonic as any other.

use bytes::{BufMut, Bytes};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::v1;

/// An `AgentMessage` encoded with prost, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    pub seq: u64,
    pub bytes: Bytes,
}

impl EncodedMessage {
    pub fn encode(msg: &v1::AgentMessage) -> EncodedMessage {
        EncodedMessage {
            seq: msg.seq,
            bytes: prost::Message::encode_to_vec(msg).into(),
        }
    }

    /// This message with its artifacts inline (see [`crate::artifacts`]),
    /// for a collector whose Welcome did not set `artifact_refs`: decoded
    /// and encoded again only when it has a table.
    pub fn inlined(self) -> EncodedMessage {
        let Ok(mut msg) = <v1::AgentMessage as prost::Message>::decode(self.bytes.clone()) else {
            return self;
        };
        if msg.inline_artifacts() {
            EncodedMessage::encode(&msg)
        } else {
            self
        }
    }
}

/// Sends encoded `AgentMessage`s, decodes `CollectorMessage`s.
#[derive(Debug, Default, Clone, Copy)]
struct EncodedCodec;

#[derive(Debug)]
struct PassThrough;

impl Encoder for PassThrough {
    type Item = EncodedMessage;
    type Error = Status;

    fn encode(&mut self, item: EncodedMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item.bytes);
        Ok(())
    }
}

#[derive(Debug)]
struct CollectorMessages;

impl Decoder for CollectorMessages {
    type Item = v1::CollectorMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<v1::CollectorMessage>, Status> {
        <v1::CollectorMessage as prost::Message>::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("a collector message does not decode: {e}")))
    }
}

impl Codec for EncodedCodec {
    type Encode = EncodedMessage;
    type Decode = v1::CollectorMessage;
    type Encoder = PassThrough;
    type Decoder = CollectorMessages;

    fn encoder(&mut self) -> PassThrough {
        PassThrough
    }

    fn decoder(&mut self) -> CollectorMessages {
        CollectorMessages
    }
}

/// `Ingest.Stream` with encoded messages: what the generated client's
/// `stream` does, but with [`EncodedMessage`]s going out.
pub async fn stream<T>(
    channel: T,
    max_message_bytes: usize,
    request: impl tonic::IntoStreamingRequest<Message = EncodedMessage>,
) -> Result<tonic::Response<tonic::codec::Streaming<v1::CollectorMessage>>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::transport::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/patchgap.v1.Ingest/Stream");
    let mut req = request.into_streaming_request();
    req.extensions_mut()
        .insert(tonic::GrpcMethod::new("patchgap.v1.Ingest", "Stream"));
    grpc.streaming(req, path, EncodedCodec).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes out is byte for byte what prost encodes.
    #[test]
    fn the_bytes_are_the_message() {
        let msg = v1::AgentMessage {
            seq: 7,
            body: Some(v1::agent_message::Body::Heartbeat(Default::default())),
        };
        let e = EncodedMessage::encode(&msg);
        assert_eq!(e.seq, 7);
        assert_eq!(
            <v1::AgentMessage as prost::Message>::decode(e.bytes.clone()).unwrap(),
            msg
        );
    }

    /// For a collector from before artifact tables: a message with a table
    /// goes out inline, one without goes out as it was, byte for byte.
    #[test]
    fn inlined_only_changes_a_message_with_a_table() {
        let artifact = v1::Artifact {
            path: b"/usr/lib/libc.so.6".to_vec(),
            ..Default::default()
        };
        let process = |pid| v1::Process {
            key: Some(v1::ProcessKey {
                pid,
                start_ticks: 1,
            }),
            artifacts: vec![artifact.clone()],
            ..Default::default()
        };
        let mut delta = v1::Delta {
            upserts: vec![process(1), process(2)],
            ..Default::default()
        };
        let inline = delta.clone();
        delta.share_artifacts();
        let shared = EncodedMessage::encode(&v1::AgentMessage {
            seq: 3,
            body: Some(v1::agent_message::Body::Delta(delta)),
        });
        let out = shared.inlined();
        assert_eq!(out.seq, 3);
        let decoded = <v1::AgentMessage as prost::Message>::decode(out.bytes.clone()).unwrap();
        assert_eq!(decoded.body, Some(v1::agent_message::Body::Delta(inline)));
        assert_eq!(out.clone().inlined(), out, "nothing more to inline");
    }
}
