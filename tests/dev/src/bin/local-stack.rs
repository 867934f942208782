//! `local-stack`: the whole TaskPilot API on 127.0.0.1, for development.
//!
//! Installs DynamoDB Local into `.local/` on first use, starts it, creates the
//! table from `template.yaml`, builds and runs the real function binaries
//! behind an API Gateway front with the same paths, then waits for Ctrl-C.

use emulators::build::Profile;
use emulators::dynamodb_local::DynamoDbLocal;
use emulators::moto::Moto;
use taskpilot_testkit::stack::{LocalStack, StackOptions};

const USAGE: &str = "usage: local-stack [--port N] [--release] [--gateway-authorizer] [--stub-openai]\n\
     \x20                  [--dynamodb-port N] [--table NAME]\n\
     (--stub-openai: the local stub model even when OPENAI_API_KEY is set; without a key it is the default;\n\
     \x20--dynamodb-port/--table: DynamoDB Local on a fixed port with a named table, e.g. 8000 and\n\
     \x20taskpilot-local for `sam local` with env.json)";

#[tokio::main]
async fn main() -> taskpilot_testkit::Result<()> {
    let mut opts = StackOptions {
        port: 3001,
        echo_logs: true,
        ..StackOptions::default()
    };
    let mut stub = false;
    let mut dynamodb_port = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                opts.port = args.next().and_then(|p| p.parse().ok()).ok_or(USAGE)?;
            }
            "--release" => opts.profile = Profile::Release,
            "--gateway-authorizer" => opts.gateway_authorizer = true,
            "--stub-openai" => stub = true,
            "--dynamodb-port" => {
                dynamodb_port = Some(args.next().and_then(|p| p.parse().ok()).ok_or(USAGE)?);
            }
            "--table" => opts.table = Some(args.next().ok_or(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    eprintln!("starting DynamoDB Local and moto (Secrets Manager, S3) ...");
    let dynamodb = tokio::task::spawn_blocking(move || match dynamodb_port {
        Some(port) => DynamoDbLocal::start_on(port),
        None => DynamoDbLocal::start(),
    });
    let moto = tokio::task::spawn_blocking(Moto::start);
    let (dynamodb, moto) = (dynamodb.await??, moto.await??);
    opts.dynamodb_endpoint = Some(dynamodb.endpoint.clone());
    opts.moto_endpoint = Some(moto.endpoint.clone());
    // The secret holds OPENAI_API_KEY when given (and then the real OpenAI, or
    // OPENAI_BASE_URL, is used); without one, or with --stub-openai, the local
    // stub model answers, so chat works on a fresh machine.
    let real_key = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .filter(|_| !stub);
    opts.openai_secret = Some(
        real_key
            .clone()
            .unwrap_or_else(|| taskpilot_testkit::stack::STUB_OPENAI_KEY.to_owned()),
    );
    if real_key.is_some() {
        opts.openai_base_url = Some(
            std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| "https://api.openai.com/v1".into()),
        );
    }
    // The README's chat walkthrough, pasted at once, is a dozen turns in a
    // few seconds: locally a user gets 60 a minute (deployed: the template's
    // ChatKitUserTurnsPerMinute, 10). Either variable set in the shell wins.
    let budget = [
        ("CHATKIT_USER_TURNS_PER_MINUTE", "60"),
        ("CHATKIT_USER_TOKENS_PER_DAY", "200000"),
    ]
    .map(|(name, local)| {
        let value = std::env::var(name).unwrap_or_else(|_| local.to_owned());
        opts.env.push((name.to_owned(), value.clone()));
        value
    });
    eprintln!("building and starting the functions ...");
    let stack = LocalStack::start(opts).await?;
    for f in stack.functions.values() {
        f.prewarm().await?;
    }
    let token = stack.token("dev-user");
    let key_note = if real_key.is_some() {
        "from OPENAI_API_KEY (seeded into the emulated Secrets Manager)"
    } else {
        "none: the local stub model answers (set OPENAI_API_KEY before starting for the real model); \
         try \"what day is it?\", \"add buy milk tomorrow\", \"complete milk\", \"what's left?\" \
         (the README's chat walkthrough shows each)"
    };
    let url = &stack.url;
    println!(
        "\nTaskPilot API is running at {url}\n\
         DynamoDB Local: {} (table {})\n\
         attachments: S3 bucket {} (moto, presigned URLs checked at {})\n\
         functions: {}\n\n\
         Dev token (user `dev-user`, valid 12 h):\n  export TOKEN={token}\n\n\
         Try it:\n\
         \x20 curl -s -X POST {url}/api/v1/tasks -H \"Authorization: Bearer $TOKEN\" \\\n\
         \x20      -H 'Content-Type: application/json' -d '{{\"title\":\"Buy milk\",\"due_date\":\"2026-11-23\"}}'\n\
         \x20 curl -s {url}/api/v1/tasks -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s -X POST {url}/api/v1/tasks/<id>/complete -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s -X DELETE {url}/api/v1/tasks/<id> -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s -X POST {url}/api/chatkit/sessions -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s -X POST {url}/api/chatkit/sessions/<session_id>/cancel -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s '{url}/health?deep=true'\n\n\
         OpenAI key: {key_note}\n\
         Chat budget per user: {} turns a minute, {} tokens a day (CHATKIT_USER_TURNS_PER_MINUTE, \
         CHATKIT_USER_TOKENS_PER_DAY); yours: curl -s {url}/api/v1/chatkit/usage -H \"Authorization: Bearer $TOKEN\"\n\n\
         Press Ctrl-C to stop everything.",
        stack.dynamodb_endpoint,
        stack.table,
        stack.files.as_ref().map_or("-", |f| f.bucket.as_str()),
        stack
            .files
            .as_ref()
            .map_or("-", |f| f.front.endpoint.as_str()),
        stack
            .functions
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        budget[0],
        budget[1],
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping ...");
    drop(stack);
    drop(dynamodb);
    drop(moto);
    Ok(())
}
