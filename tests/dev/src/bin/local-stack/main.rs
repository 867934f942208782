//! `local-stack`: the whole TaskPilot API on 127.0.0.1, for development.
//!
//! Installs DynamoDB Local and moto into `.local/` on first use, starts them
//! with the data kept under `.local/data/` (a restart finds it; `--fresh`
//! starts empty), creates the table and the bucket from `template.yaml` when
//! they are not there yet, builds and runs the real function binaries behind
//! an API Gateway front with the same paths, then waits for Ctrl-C.

mod data;
mod watch;

use std::path::{Path, PathBuf};

use emulators::build::Profile;
use emulators::dynamodb_local::DynamoDbLocal;
use emulators::moto::Moto;
use emulators::template::TableState;
use emulators::tokens::DevAuth;
use taskpilot_testkit::stack::{LocalStack, StackOptions};

const USAGE: &str = "usage: local-stack [--port N] [--watch] [--fresh] [--release] [--gateway-authorizer] [--stub-openai]\n\
     \x20                  [--dynamodb-port N] [--table NAME] [--allow-origin URL]... [--data DIR]\n\
     \x20      local-stack token --user ID   (a dev token for any user, valid 12 h)\n\
     \x20      local-stack data --user ID [--data DIR] [--dynamodb-port N] [--table NAME]\n\
     \x20                                   (a user's tasks and threads, as JSON)\n\
     (--watch: rebuild the functions a source change affects and swap them in, data kept;\n\
     \x20the data is kept in .local/data/ (--data DIR) between starts; --fresh deletes it first;\n\
     \x20--stub-openai: the local stub model even when OPENAI_API_KEY is set; without a key it is the default;\n\
     \x20--dynamodb-port/--table: DynamoDB Local's port and the table, by default 8000 and\n\
     \x20taskpilot-local, the ones `sam local` with env.json uses)";

/// DynamoDB Local's port, unless `--dynamodb-port` says otherwise: the one
/// `env.json` gives `sam local`.
const DYNAMODB_PORT: u16 = 8000;
/// The table's name, unless `--table` says otherwise: `env.json`'s.
const TABLE: &str = "taskpilot-local";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    /// Run the stack.
    Run(Box<RunArgs>),
    /// Print a token for this user.
    Token(String),
    /// Print this user's data, kept where these options say.
    Data(String, Box<RunArgs>),
    /// Print the usage.
    Help,
}

/// `local-stack`'s options.
#[derive(Debug, PartialEq)]
struct RunArgs {
    port: u16,
    profile: Profile,
    watch: bool,
    fresh: bool,
    gateway_authorizer: bool,
    stub_openai: bool,
    dynamodb_port: u16,
    table: String,
    allow_origins: Vec<String>,
    /// Where the data is kept between starts.
    data: PathBuf,
}

impl Default for RunArgs {
    fn default() -> Self {
        Self {
            port: 3001,
            profile: Profile::Dev,
            watch: false,
            fresh: false,
            gateway_authorizer: false,
            stub_openai: false,
            dynamodb_port: DYNAMODB_PORT,
            table: TABLE.to_owned(),
            allow_origins: Vec::new(),
            data: data_dir(),
        }
    }
}

/// Reads the command line (without the program's name).
fn parse(args: &[String]) -> Result<Command, String> {
    let usage = |what: &str| format!("usage: local-stack {what} --user ID\n\n{USAGE}");
    let rest = args.get(1..).unwrap_or_default();
    // `--user ID`'s position in `rest`, and the user.
    let user = || {
        let at = rest.iter().position(|a| a == "--user")?;
        let user = rest.get(at + 1).filter(|u| !u.trim().is_empty())?;
        Some((at, user.clone()))
    };
    match args.first().map(String::as_str) {
        Some("token") => match (user(), rest.len()) {
            (Some((_, user)), 2) => Ok(Command::Token(user)),
            _ => Err(usage("token")),
        },
        Some("data") => {
            let (at, user) = user().ok_or_else(|| usage("data"))?;
            let others: Vec<String> = [&rest[..at], &rest[at + 2..]].concat();
            Ok(
                match options(&others, &["--data", "--dynamodb-port", "--table", "--help"])? {
                    Command::Run(kept) => Command::Data(user, kept),
                    help => help,
                },
            )
        }
        _ => options(args, &[]),
    }
}

/// The options of `local-stack`, or only those of `allowed` when it names
/// any (a subcommand's).
fn options(args: &[String], allowed: &[&str]) -> Result<Command, String> {
    let mut run = RunArgs::default();
    let mut args = args.iter();
    let port = |value: Option<&String>, flag: &str| {
        value
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{flag} needs a port number\n{USAGE}"))
    };
    while let Some(arg) = args.next() {
        if !allowed.is_empty() && !allowed.contains(&arg.as_str()) {
            return Err(format!(
                "{arg} is not an option here (only {})\n{USAGE}",
                allowed.join(", ")
            ));
        }
        match arg.as_str() {
            "--port" => run.port = port(args.next(), "--port")?,
            "--dynamodb-port" => run.dynamodb_port = port(args.next(), "--dynamodb-port")?,
            "--release" => run.profile = Profile::Release,
            "--fresh" => run.fresh = true,
            "--watch" => run.watch = true,
            "--gateway-authorizer" => run.gateway_authorizer = true,
            "--stub-openai" => run.stub_openai = true,
            "--table" => run.table = args.next().ok_or(USAGE)?.clone(),
            "--data" => run.data = args.next().ok_or(USAGE)?.into(),
            // A frontend's origin (e.g. http://localhost:5173), besides
            // localhost:3000 and 127.0.0.1:3000; repeatable.
            "--allow-origin" => run.allow_origins.push(args.next().ok_or(USAGE)?.clone()),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(Command::Run(Box::new(run)))
}

/// Where the local stack keeps its data between starts.
fn data_dir() -> PathBuf {
    emulators::workspace_root().join(".local/data")
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args)? {
        Command::Help => println!("{USAGE}"),
        Command::Token(user) => println!("{}", DevAuth::default().token(&user)),
        Command::Data(user, kept) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&data_of(&user, &kept).await?)?
            )
        }
        Command::Run(run) => run_stack(*run).await?,
    }
    Ok(())
}

/// `local-stack data`: reads the running stack's DynamoDB Local, or starts
/// one on the kept data for the time of the read.
async fn data_of(user: &str, kept: &RunArgs) -> taskpilot_testkit::Result<serde_json::Value> {
    let dir = kept.data.join("dynamodb");
    let port = kept.dynamodb_port;
    let _started = if port_free(port, "--dynamodb-port").is_ok() {
        if !dir.is_dir() {
            return Err(format!(
                "no data yet in {}: start the stack once (cargo run -p taskpilot-dev --bin local-stack)",
                dir.display()
            )
            .into());
        }
        Some(tokio::task::spawn_blocking(move || DynamoDbLocal::start_on_disk(port, &dir)).await??)
    } else {
        None
    };
    let client = emulators::aws::dynamodb_client(&format!("http://127.0.0.1:{port}")).await;
    Ok(data::dump(client, &kept.table, user).await?)
}

/// The stack `run` asks for, before the emulators' endpoints and the OpenAI
/// settings are known: the kept table and bucket, the page, the request log
/// and the functions' compact local lines.
fn stack_options(run: &RunArgs) -> StackOptions {
    StackOptions {
        port: run.port,
        profile: run.profile,
        gateway_authorizer: run.gateway_authorizer,
        table: Some(run.table.clone()),
        files_dir: Some(run.data.join("s3")),
        allow_origins: run.allow_origins.clone(),
        echo_logs: true,
        log_requests: true,
        page: true,
        // The functions' lines without the runtime's span and time.
        env: vec![("LOG_FORMAT".into(), "local".into())],
        ..StackOptions::default()
    }
}

/// Starts the stack with `run`'s options and serves until Ctrl-C.
async fn run_stack(run: RunArgs) -> taskpilot_testkit::Result<()> {
    port_free(run.port, "--port")?;
    port_free(run.dynamodb_port, "--dynamodb-port")?;
    let data = run.data.clone();
    if run.fresh && data.exists() {
        std::fs::remove_dir_all(&data)?;
        eprintln!("--fresh: deleted {}", data.display());
    }
    let mut opts = stack_options(&run);
    eprintln!(
        "starting DynamoDB Local (data in {}) and moto (Secrets Manager, S3) ...",
        shown(&data)
    );
    let dynamodb_dir = run.data.join("dynamodb");
    let dynamodb_port = run.dynamodb_port;
    let dynamodb = tokio::task::spawn_blocking(move || {
        DynamoDbLocal::start_on_disk(dynamodb_port, &dynamodb_dir)
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
        .filter(|_| !run.stub_openai);
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
    let origins: Vec<String> = taskpilot_testkit::stack::LOCAL_ORIGINS
        .iter()
        .map(|o| (*o).to_owned())
        .chain(opts.allow_origins.iter().cloned())
        .collect();
    // The sources before the build, for --watch to compare with.
    let before = if run.watch {
        Some(watch::Before::scan().await?)
    } else {
        None
    };
    let stack = LocalStack::start(opts).await?;
    eprintln!("starting the functions ...");
    // With --watch, each function starts from a copy of its binary (the
    // watch's first step); without, from the build.
    let watch = if let Some(before) = before {
        Some(watch::Watch::start(before, &stack.functions, run.profile).await?)
    } else {
        for f in stack.functions.values() {
            f.prewarm().await?;
        }
        None
    };
    started_up(&stack).await;
    let token = stack.token("dev-user");
    let key_note = if real_key.is_some() {
        "from OPENAI_API_KEY (seeded into the emulated Secrets Manager)"
    } else {
        "none: the local stub model answers (set OPENAI_API_KEY before starting for the real model); \
         try \"what day is it?\", \"add buy milk tomorrow\", \"complete milk\", \"what's left?\" \
         (the README's chat walkthrough shows each)"
    };
    let kept = match stack.table_state {
        TableState::Created => "new, empty",
        TableState::Kept => "kept from the last start",
    };
    let url = &stack.url;
    println!(
        "\nTaskPilot API is running at {url}\n\
         page: {url}/ (dev-user's tasks, refreshed as they change, beside the ChatKit web component)\n\
         data ({kept}; --fresh starts empty): {}\n\
         \x20 DynamoDB Local {} table {}; attachments: S3 bucket {} (moto, presigned URLs checked at {})\n\
         \x20 see a user's tasks and threads: cargo run -q -p taskpilot-dev --bin local-stack -- data --user dev-user\n\
         functions: {}\n\
         browser origins allowed (--allow-origin URL adds one): {}\n\
         OpenAI key: {key_note}\n\
         Chat budget per user: {} turns a minute, {} tokens a day (CHATKIT_USER_TURNS_PER_MINUTE, \
         CHATKIT_USER_TOKENS_PER_DAY)\n\
         {}\n\n\
         Try it:\n\
         \x20 curl -s -X POST {url}/api/v1/tasks -H \"Authorization: Bearer $TOKEN\" \\\n\
         \x20      -H 'Content-Type: application/json' -d '{{\"title\":\"Buy milk\",\"due_date\":\"2026-11-23\"}}'\n\
         \x20 curl -s {url}/api/v1/tasks -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s {url}/api/v1/chatkit/usage -H \"Authorization: Bearer $TOKEN\"\n\
         \x20 curl -s '{url}/health?deep=true'\n\
         (the README's \"Use it\" section has more, with ids captured for pasting)\n\n\
         Dev token (user `dev-user`, valid 12 h; another user's: local-stack token --user ID):\n\
         \x20 export TOKEN={token}\n\n\
         Press Ctrl-C to stop everything (the data is kept).",
        shown(&data),
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
        watch.as_ref().map_or_else(
            || "a source change needs a restart (--watch rebuilds and swaps it in)".to_owned(),
            watch::Watch::describe
        ),
    );
    match watch {
        Some(watch) => tokio::select! {
            stopped = tokio::signal::ctrl_c() => stopped?,
            failed = watch.run(&stack.functions) => failed?,
        },
        None => tokio::signal::ctrl_c().await?,
    }
    eprintln!("stopping (the data stays in {}) ...", shown(&data));
    drop(stack);
    drop(dynamodb);
    drop(moto);
    Ok(())
}

/// Waits (30 s at most) until each function's processes have logged their
/// start-up line, which comes through a pipe: the banner is then the last
/// thing printed.
async fn started_up(stack: &LocalStack) {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        let all = stack.functions.values().all(|f| {
            let lines = f.logs();
            let up = lines.iter().filter(|l| l.contains("configuration read"));
            up.count() as u64 >= f.cold_starts()
        });
        if all {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `path` relative to the working directory when it is inside it.
fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use taskpilot_http::auth::{AuthSettings, Authenticator};

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn a_token_is_accepted_as_the_user_named_by_the_stacks_authenticator() {
        let dev = DevAuth::default();
        let settings =
            AuthSettings::shared_secret(&dev.secret, &dev.issuer, &dev.audience).unwrap();
        let auth = Authenticator::new(settings, || unreachable!("no JWKS")).unwrap();
        let Command::Token(user) = parse(&args("token --user alice")).unwrap() else {
            panic!("not the token command");
        };
        let request = lambda_http::http::Request::builder()
            .header("authorization", format!("Bearer {}", dev.token(&user)))
            .body(lambda_http::Body::Empty)
            .unwrap();
        let user = auth.authenticate(&request).await.unwrap();
        assert_eq!(user.as_str(), "alice");
    }

    #[test]
    fn token_and_data_need_a_user() {
        for command in ["token", "data"] {
            for rest in ["", " --user", " --who alice"] {
                let err = parse(&args(&format!("{command}{rest}"))).unwrap_err();
                assert!(err.contains(&format!("{command} --user ID")), "{err}");
            }
        }
        assert_eq!(
            parse(&args("data --user bob")),
            Ok(Command::Data("bob".into(), Box::default()))
        );
    }

    #[test]
    fn data_reads_where_its_options_say_and_takes_no_other() {
        let Ok(Command::Data(user, kept)) = parse(&args(
            "data --data /tmp/kept --user carol --dynamodb-port 8100 --table t",
        )) else {
            panic!("not data");
        };
        assert_eq!(user, "carol");
        assert_eq!(
            *kept,
            RunArgs {
                data: "/tmp/kept".into(),
                dynamodb_port: 8100,
                table: "t".into(),
                ..RunArgs::default()
            }
        );
        let err = parse(&args("data --user carol --fresh")).unwrap_err();
        assert!(err.contains("--fresh is not an option here"), "{err}");
        assert!(parse(&args("token --user carol --table t")).is_err());
    }

    #[test]
    fn by_default_the_data_is_kept_on_env_jsons_port_and_table() {
        let Command::Run(run) = parse(&[]).unwrap() else {
            panic!("not run");
        };
        assert_eq!(*run, RunArgs::default());
        assert_eq!(
            (run.port, run.dynamodb_port, run.table.as_str()),
            (3001, 8000, "taskpilot-local")
        );
        assert!(!run.fresh);
        let env: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(emulators::workspace_root().join("env.json")).unwrap(),
        )
        .unwrap();
        let tasks = &env["TasksFunction"];
        assert_eq!(tasks["TABLE_NAME"], TABLE);
        assert!(
            tasks["AWS_ENDPOINT_URL_DYNAMODB"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{DYNAMODB_PORT}"))
        );
    }

    #[test]
    fn each_option_is_read() {
        let Command::Run(run) = parse(&args(
            "--port 4000 --release --watch --fresh --gateway-authorizer --stub-openai --dynamodb-port 8100 \
             --table t --allow-origin http://a --allow-origin http://b --data /tmp/kept",
        ))
        .unwrap() else {
            panic!("not run");
        };
        assert_eq!(
            *run,
            RunArgs {
                port: 4000,
                profile: Profile::Release,
                watch: true,
                fresh: true,
                gateway_authorizer: true,
                stub_openai: true,
                dynamodb_port: 8100,
                table: "t".into(),
                allow_origins: vec!["http://a".into(), "http://b".into()],
                data: "/tmp/kept".into(),
            }
        );
        assert_eq!(parse(&args("--help")), Ok(Command::Help));
    }

    #[test]
    fn the_stack_keeps_its_table_and_bucket_serves_the_page_and_logs_for_a_terminal() {
        let run = RunArgs {
            port: 4000,
            profile: Profile::Release,
            gateway_authorizer: true,
            table: "t".into(),
            allow_origins: vec!["http://a".into()],
            data: "/tmp/kept".into(),
            ..RunArgs::default()
        };
        let opts = stack_options(&run);
        assert_eq!((opts.port, opts.profile), (4000, Profile::Release));
        assert!(opts.gateway_authorizer);
        assert_eq!(opts.table.as_deref(), Some("t"));
        assert_eq!(opts.files_dir, Some(PathBuf::from("/tmp/kept/s3")));
        assert_eq!(opts.allow_origins, ["http://a"]);
        assert!(opts.echo_logs && opts.log_requests && opts.page);
        assert_eq!(opts.env, [("LOG_FORMAT".to_owned(), "local".to_owned())]);
        let defaults = stack_options(&RunArgs::default());
        assert!(!defaults.gateway_authorizer);
        assert_eq!(defaults.files_dir, Some(data_dir().join("s3")));
    }

    #[test]
    fn the_data_lives_in_the_checkouts_local_folder_and_is_shown_from_it() {
        let dir = data_dir();
        assert_eq!(dir, emulators::workspace_root().join(".local").join("data"));
        let shown = shown(&dir);
        let cwd = std::env::current_dir().unwrap();
        match dir.strip_prefix(&cwd) {
            Ok(inside) => assert_eq!(shown, inside.display().to_string()),
            Err(_) => assert_eq!(shown, dir.display().to_string()),
        }
        assert_eq!(super::shown(Path::new("/elsewhere/x")), "/elsewhere/x");
    }

    #[test]
    fn a_bad_argument_is_named() {
        assert!(
            parse(&args("--port x"))
                .unwrap_err()
                .contains("--port needs a port number")
        );
        assert!(
            parse(&args("--dynamodb-port"))
                .unwrap_err()
                .contains("--dynamodb-port needs")
        );
        assert!(
            parse(&args("--frsh"))
                .unwrap_err()
                .contains("unknown argument --frsh")
        );
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
