//! A response as it goes on the wire: the message without its nonce, encoded once and
//! shared by every proxy that gets the same change, plus this stream's nonce.
//!
//! Protobuf fields may come in any order, so a response is `nonce field ++ body`: a
//! route change of 250 KB to a thousand proxies is encoded once, not a thousand times,
//! and never copied per proxy (the server writes the shared bytes as they are).

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use prost::Message;

use crate::status::XdsApi;

/// Field number of `nonce` in both `DiscoveryResponse` and `DeltaDiscoveryResponse`.
const NONCE_FIELD: u32 = 5;

/// A response to put on the stream.
#[derive(Clone, Debug)]
pub struct Response {
    api: XdsApi,
    type_url: Box<str>,
    nonce: String,
    /// The encoded message without its nonce (shared).
    body: Bytes,
}

/// A response decoded back into its message (tests, tools).
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    Sotw(DiscoveryResponse),
    Delta(DeltaDiscoveryResponse),
}

impl Decoded {
    pub fn type_url(&self) -> &str {
        match self {
            Decoded::Sotw(r) => &r.type_url,
            Decoded::Delta(r) => &r.type_url,
        }
    }

    pub fn nonce(&self) -> &str {
        match self {
            Decoded::Sotw(r) => &r.nonce,
            Decoded::Delta(r) => &r.nonce,
        }
    }
}

impl Response {
    /// `body` is the encoded message with an empty nonce.
    pub(crate) fn new(api: XdsApi, type_url: &str, nonce: String, body: Bytes) -> Response {
        Response { api, type_url: type_url.into(), nonce, body }
    }

    /// Encodes `message` (its nonce must be empty) as the shared body of responses.
    pub(crate) fn encode_body(message: &impl Message) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The encoded length of the whole message.
    pub fn encoded_len(&self) -> usize {
        self.nonce_field_len() + self.body.len()
    }

    fn nonce_field_len(&self) -> usize {
        if self.nonce.is_empty() {
            return 0;
        }
        prost::encoding::key_len(NONCE_FIELD)
            + prost::encoding::encoded_len_varint(self.nonce.len() as u64)
            + self.nonce.len()
    }

    /// The gRPC frame in two parts: the frame header with the nonce field (small, this
    /// stream's own) and the shared body.
    pub fn grpc_frame(&self) -> (Bytes, Bytes) {
        let mut head = BytesMut::with_capacity(5 + self.nonce_field_len());
        head.put_u8(0);
        head.put_u32(self.encoded_len() as u32);
        if !self.nonce.is_empty() {
            prost::encoding::string::encode(NONCE_FIELD, &self.nonce, &mut head);
        }
        (head.freeze(), self.body.clone())
    }

    /// The message, decoded.
    pub fn decoded(&self) -> Decoded {
        let (head, body) = self.grpc_frame();
        let mut bytes = BytesMut::with_capacity(head.len() - 5 + body.len());
        bytes.extend_from_slice(&head[5..]);
        bytes.extend_from_slice(&body);
        match self.api {
            XdsApi::StateOfTheWorld => {
                Decoded::Sotw(DiscoveryResponse::decode(bytes.freeze()).expect("a response meshd encoded decodes"))
            }
            XdsApi::Delta => Decoded::Delta(
                DeltaDiscoveryResponse::decode(bytes.freeze()).expect("a response meshd encoded decodes"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceType;
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn nonce_and_shared_body_make_the_whole_message() {
        let message = DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![Any { type_url: "t".into(), value: vec![1, 2, 3] }],
            type_url: ResourceType::Cluster.type_url().into(),
            ..Default::default()
        };
        let body = Response::encode_body(&message);
        let response = Response::new(XdsApi::StateOfTheWorld, ResourceType::Cluster.type_url(), "42".into(), body);
        let (head, body) = response.grpc_frame();
        let length = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        assert_eq!((head[0], length), (0, head.len() - 5 + body.len()));
        let want = DiscoveryResponse { nonce: "42".into(), ..message };
        assert_eq!(response.decoded(), Decoded::Sotw(want.clone()));
        assert_eq!(response.encoded_len(), want.encoded_len());
    }
}
