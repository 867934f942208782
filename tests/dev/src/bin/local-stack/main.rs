//! `local-stack`: the whole TaskPilot API on 127.0.0.1, for development.
//!
//! Installs DynamoDB Local into `.local/` on first use, starts it, creates the
//! table from `template.yaml`, builds and runs the real function binaries
//! behind an API Gateway front with the same paths, then waits for Ctrl-C.

use emulators::build::Profile;
use emulators::dynamodb_local::DynamoDbLocal;
use emulators::moto::Moto;
use emulators::tokens::DevAuth;
use taskpilot_testkit::stack::{LocalStack, StackOptions};

const USAGE: &str = "usage: local-stack [--port N] [--release] [--gateway-authorizer] [--stub-openai]\n\
     \x20                  [--dynamodb-port N] [--table NAME] [--allow-origin URL]...\n\
     \x20      local-stack token --user ID   (a dev token for any user, valid 12 h)\n\
     (--stub-openai: the local stub model even when OPENAI_API_KEY is set; without a key it is the default;\n\
     \x20--dynamodb-port/--table: DynamoDB Local on a fixed port with a named table, e.g. 8000 and\n\
     \x20taskpilot-local for `sam local` with env.json)";

/// `local-stack token --user ID`: the token of user `ID`, signed with the
/// local stack's dev secret (the same for every start, so it works against a
/// running stack).
fn token_command(args: &[String]) -> Result<String, String> {
    match args {
        [flag, user] if flag == "--user" && !user.trim().is_empty() => {
            Ok(DevAuth::default().token(user))
        }
        _ => Err(format!("usage: local-stack token --user ID\n\n{USAGE}")),
    }
}

/// Fails, naming the port and the flag that moves it, when `port` on
/// 127.0.0.1 is taken: checked before anything starts.
fn port_free(port: u16, flag: &str) -> Result<(), String> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| {
            format!(
                "port {port} on 127.0.0.1 is in use ({e}): is another local-stack running? \
                 Stop it, or pick another port with {flag} N"
            )
        })
}

#[tokio::main]
async fn main() -> taskpilot_testkit::Result<()> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().map(String::as_str) == Some("token") {
        println!("{}", token_command(&all[1..])?);
        return Ok(());
    }
    let mut opts = StackOptions {
        port: 3001,
        echo_logs: true,
        log_requests: true,
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
            // A frontend's origin (e.g. http://localhost:5173), besides
            // localhost:3000 and 127.0.0.1:3000; repeatable.
            "--allow-origin" => opts.allow_origins.push(args.next().ok_or(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    port_free(opts.port, "--port")?;
    if let Some(port) = dynamodb_port {
        port_free(port, "--dynamodb-port")?;
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
    let origins: Vec<String> = taskpilot_testkit::stack::LOCAL_ORIGINS
        .iter()
        .map(|o| (*o).to_owned())
        .chain(opts.allow_origins.iter().cloned())
        .collect();
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
         functions: {}\n\
         browser origins allowed (--allow-origin URL adds one): {}\n\n\
         Dev token (user `dev-user`, valid 12 h; another user's: local-stack token --user ID):\n  export TOKEN={token}\n\n\
         Try it:\n\
         \x20 curl -s -X POST {url}/api/v1/tasks -H \"Authorization: Bearer $TOKEN\" \\\n\
         \x20      -H 'Content-Type: application/json' -d '{{\"title\":\"Buy milk\",\"due_date\":\"2026-11-23\"}}'\n\
         \x20 curl -s {url}/api/v1/tasks -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 ID=<a task id from the list>\n\
         \x20 curl -s -X POST {url}/api/v1/tasks/$ID/complete -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s -X DELETE {url}/api/v1/tasks/$ID -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s -X POST {url}/api/chatkit/sessions -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s -X POST {url}/api/chatkit/sessions/$SESSION_ID/cancel -H \"Authorization: Bearer $TOKEN\"\n\
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
        origins.join(", "),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use taskpilot_http::auth::{AuthSettings, Authenticator};

    #[tokio::test]
    async fn a_token_is_accepted_as_the_user_named_by_the_stacks_authenticator() {
        let dev = DevAuth::default();
        let settings =
            AuthSettings::shared_secret(&dev.secret, &dev.issuer, &dev.audience).unwrap();
        let auth = Authenticator::new(settings, || unreachable!("no JWKS")).unwrap();
        let token = token_command(&["--user".to_owned(), "alice".to_owned()]).unwrap();
        let request = lambda_http::http::Request::builder()
            .header("authorization", format!("Bearer {token}"))
            .body(lambda_http::Body::Empty)
            .unwrap();
        let user = auth.authenticate(&request).await.unwrap();
        assert_eq!(user.as_str(), "alice");
    }

    #[test]
    fn a_token_needs_a_user() {
        for args in [
            vec![],
            vec!["--user".to_owned()],
            vec!["--user".to_owned(), " ".to_owned()],
        ] {
            assert!(
                token_command(&args)
                    .unwrap_err()
                    .contains("token --user ID")
            );
        }
    }

    #[test]
    fn a_busy_port_is_named_with_the_flag_that_moves_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = port_free(port, "--port").unwrap_err();
        assert!(err.contains(&format!("port {port}")), "{err}");
        assert!(err.contains("--port N"), "{err}");
        drop(taken);
        assert_eq!(port_free(port, "--port"), Ok(()));
    }
}
