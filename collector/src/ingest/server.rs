//! The `IngestService` server, written out rather than taken from tonic's
//! generated `IngestServiceServer`, whose codec is fixed: this one decodes with
//! [`PushCodec`], which enforces the batch limits before a batch is in memory.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use livehead_proto::v1::{PushRequest, PushResponse};
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::codec::PushCodec;
use super::{Ingest, PushStream};

const PUSH_PATH: &str = "/livehead.v1.IngestService/Push";

/// `livehead.v1.IngestService` over an [`Ingest`].
#[derive(Clone)]
pub struct IngestServer {
    ingest: Arc<Ingest>,
}

impl IngestServer {
    pub fn new(ingest: Ingest) -> Self {
        Self {
            ingest: Arc::new(ingest),
        }
    }
}

impl NamedService for IngestServer {
    const NAME: &'static str = livehead_proto::v1::ingest_service_server::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for IngestServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != PUSH_PATH {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let ingest = Arc::clone(&self.ingest);
        Box::pin(async move {
            let limits = ingest.limits();
            let mut grpc = Grpc::new(PushCodec::new(limits.max_batch_records))
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(limits.max_message_bytes);
            Ok(grpc.streaming(PushMethod(ingest), request).await)
        })
    }
}

struct PushMethod(Arc<Ingest>);

impl StreamingService<PushRequest> for PushMethod {
    type Response = PushResponse;
    type ResponseStream = PushStream;
    type Future = BoxFuture<Response<PushStream>, Status>;

    fn call(&mut self, request: Request<Streaming<PushRequest>>) -> Self::Future {
        let ingest = Arc::clone(&self.0);
        Box::pin(async move { ingest.push(request).await })
    }
}
