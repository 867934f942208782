//! A hello-world `lambda_http` bootstrap: the bench's cold-start baseline.
//! It is built with the functions' release profile and answers a constant, so
//! its init is what the runtime alone costs.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async {
        Ok::<_, Error>(Response::new(Body::from("hello")))
    }))
    .await
}
