//! The whole stack on 127.0.0.1: DynamoDB Local with the template's table,
//! the real function binaries and the API Gateway front.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;

use crate::Result;
use crate::openai_stub::OpenAiStub;
use emulators::aws::{dynamodb_client, s3_client};
use emulators::build::{self, Profile};
use emulators::dynamodb_local::DynamoDbLocal;
use emulators::gateway::{self, Binding, JwtAuthorizer, StatusTally};
use emulators::moto::Moto;
use emulators::proxy::CountingProxy;
use emulators::runtime_api::{FunctionConfig, LambdaFunction};
use emulators::s3_front::S3Front;
use emulators::template::{TableState, Template};
use emulators::tokens::DevAuth;

/// The browser origins the local stack allows.
pub const LOCAL_ORIGINS: [&str; 2] = ["http://localhost:3000", "http://127.0.0.1:3000"];
/// The cursor key the local stack gives its functions.
pub const DEV_CURSOR_KEY: &str = "local-dev-only-cursor-key-0123456789abcdef";
/// The key the OpenAI stub accepts.
pub const STUB_OPENAI_KEY: &str = "sk-test-stub-key";
/// The hosted workflow the OpenAI stub knows.
pub const STUB_WORKFLOW: &str = "wf_taskpilot_test";

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Binaries to run (default: every function in the template).
    pub functions: Option<Vec<String>>,
    /// Gateway port (0 = any free port).
    pub port: u16,
    /// Debug or release binaries.
    pub profile: Profile,
    /// Print function output.
    pub echo_logs: bool,
    /// Emulate API Gateway's JWT authorizer instead of in-function verification.
    pub gateway_authorizer: bool,
    /// Most processes per function.
    pub max_instances: usize,
    /// Extra or overriding environment for every function.
    pub env: Vec<(String, String)>,
    /// Use this DynamoDB endpoint instead of the process-wide DynamoDB Local.
    pub dynamodb_endpoint: Option<String>,
    /// Use this moto endpoint instead of the process-wide moto_server.
    pub moto_endpoint: Option<String>,
    /// The value seeded into the OpenAI secret (default: the stub's key).
    pub openai_secret: Option<String>,
    /// Point functions at a real OpenAI-compatible URL instead of the stub.
    pub openai_base_url: Option<String>,
    /// Put a counting proxy in front of DynamoDB (see [`LocalStack::dynamodb_proxy`]).
    pub count_dynamodb: bool,
    /// Every function's timeout instead of the template's.
    pub function_timeout: Option<Duration>,
    /// The table's name (default: a fresh `taskpilot-<ulid>`). A named table
    /// that exists is kept with its items ([`LocalStack::table_state`]).
    pub table: Option<String>,
    /// Keep the attachments: a stable bucket name and every object mirrored
    /// into this folder as it is written, restored into moto at start
    /// (default: a fresh bucket, in memory).
    pub files_dir: Option<std::path::PathBuf>,
    /// Whether the gateway prints one line per request to stderr (method,
    /// path, status, latency, function); the lines are kept either way
    /// ([`StatusTally::lines`]).
    pub log_requests: bool,
    /// Browser origins allowed besides [`LOCAL_ORIGINS`] (a frontend's dev
    /// server): the functions' CORS and the attachments bucket's.
    pub allow_origins: Vec<String>,
    /// Serve a development page at `GET /` (the dev user's tasks, refreshed
    /// from the change feed at `GET /_local/changes`, beside the ChatKit web
    /// component) with a fresh `dev-user` token each load; API Gateway serves
    /// neither.
    pub page: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            functions: None,
            port: 0,
            profile: Profile::Dev,
            echo_logs: false,
            gateway_authorizer: false,
            max_instances: 8,
            env: Vec::new(),
            dynamodb_endpoint: None,
            moto_endpoint: None,
            openai_secret: None,
            openai_base_url: None,
            count_dynamodb: false,
            function_timeout: None,
            table: None,
            files_dir: None,
            allow_origins: Vec::new(),
            log_requests: false,
            page: false,
        }
    }
}

/// A running stack.
pub struct LocalStack {
    /// Gateway base URL, e.g. `http://127.0.0.1:3001`.
    pub url: String,
    /// Table name.
    pub table: String,
    /// Whether the table was created, or kept from an earlier start.
    pub table_state: TableState,
    /// DynamoDB endpoint.
    pub dynamodb_endpoint: String,
    /// A DynamoDB client for inspecting the table.
    pub dynamodb: Client,
    /// Token settings.
    pub auth: DevAuth,
    /// The functions by binary name.
    pub functions: BTreeMap<String, LambdaFunction>,
    /// The Secrets Manager side, when a function needs the OpenAI secret.
    pub secrets: Option<SecretsSide>,
    /// The OpenAI stub, unless a real base URL was given.
    pub openai: Option<OpenAiStub>,
    /// Counts the functions' DynamoDB requests, when asked for.
    pub dynamodb_proxy: Option<CountingProxy>,
    /// The attachments bucket, when a function uses one.
    pub files: Option<FilesSide>,
    /// The gateway's answers by status.
    pub responses: StatusTally,
}

/// The attachments bucket in moto (with the template's settings) and the
/// front that checks presigned URLs as S3 does; the functions and browsers
/// reach the bucket through the front.
pub struct FilesSide {
    /// The bucket's name (`ATTACHMENTS_BUCKET`).
    pub bucket: String,
    /// The front (`AWS_ENDPOINT_URL_S3`).
    pub front: S3Front,
    /// A client straight to moto, for inspecting the bucket.
    pub s3: aws_sdk_s3::Client,
}

impl FilesSide {
    /// The stored object of an attachment: its bytes and content type.
    pub async fn object(&self, attachment_id: &str) -> Option<(Vec<u8>, Option<String>)> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(format!("attachments/{attachment_id}"))
            .send()
            .await
            .ok()?;
        let content_type = out.content_type().map(str::to_owned);
        let bytes = out.body.collect().await.ok()?.into_bytes().to_vec();
        Some((bytes, content_type))
    }

    /// The tags of an attachment's object.
    pub async fn tags(&self, attachment_id: &str) -> Vec<(String, String)> {
        self.s3
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(format!("attachments/{attachment_id}"))
            .send()
            .await
            .map(|out| {
                out.tag_set()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// moto, the seeded secret and the counting proxy the functions talk through.
pub struct SecretsSide {
    /// moto's own endpoint (for seeding and rotating).
    pub moto_endpoint: String,
    /// The secret's ARN (`OPENAI_SECRET_ARN`).
    pub arn: String,
    /// The proxy the functions use; counts `GetSecretValue` calls.
    pub proxy: CountingProxy,
}

impl SecretsSide {
    /// `GetSecretValue` calls made by the functions so far.
    pub fn get_secret_value_calls(&self) -> usize {
        self.proxy.count("secretsmanager.GetSecretValue")
    }

    /// Replaces the secret's value.
    pub async fn rotate(&self, value: &str) -> Result<()> {
        emulators::aws::secrets_client(&self.moto_endpoint)
            .await
            .put_secret_value()
            .secret_id(&self.arn)
            .secret_string(value)
            .send()
            .await?;
        Ok(())
    }
}

/// A new table from the template's definition in the process-wide DynamoDB
/// Local: `(client, table name, endpoint)`.
pub async fn fresh_table(prefix: &str) -> Result<(Client, String, String)> {
    let ddb = tokio::task::spawn_blocking(DynamoDbLocal::shared).await??;
    let client = dynamodb_client(&ddb.endpoint).await;
    let table = format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase());
    Template::load()?.create_table(&client, &table).await?;
    Ok((client, table, ddb.endpoint.clone()))
}

/// The environment every function gets on the local stack.
pub fn base_env(dynamodb_endpoint: &str, table: &str, auth: &DevAuth) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint),
        ("TABLE_NAME", table),
        ("CURSOR_SIGNING_KEY", DEV_CURSOR_KEY),
        ("ALLOWED_ORIGINS", &LOCAL_ORIGINS.join(",")),
        ("RUST_LOG", "info"),
        // Tests chat faster than a person: the per-user budget is the
        // template's concern only where a test sets it (see `chat_budget`).
        ("CHATKIT_USER_TURNS_PER_MINUTE", "100000"),
        ("CHATKIT_USER_TOKENS_PER_DAY", "1000000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.extend(auth.env());
    env
}

/// The moto the options name, else the process-wide one.
async fn moto_endpoint(opts: &StackOptions) -> Result<String> {
    Ok(match &opts.moto_endpoint {
        Some(ep) => ep.clone(),
        None => tokio::task::spawn_blocking(Moto::shared)
            .await??
            .endpoint
            .clone(),
    })
}

impl LocalStack {
    /// Starts everything and returns once the gateway accepts requests.
    pub async fn start(opts: StackOptions) -> Result<Self> {
        let template = Template::load()?;
        let dynamodb_endpoint = match &opts.dynamodb_endpoint {
            Some(ep) => ep.clone(),
            None => tokio::task::spawn_blocking(DynamoDbLocal::shared)
                .await??
                .endpoint
                .clone(),
        };
        let dynamodb = dynamodb_client(&dynamodb_endpoint).await;
        let table_state;
        let table = match &opts.table {
            Some(name) => {
                table_state = template.ensure_table(&dynamodb, name).await?;
                name.clone()
            }
            None => {
                let name = format!("taskpilot-{}", ulid::Ulid::new().to_string().to_lowercase());
                template.create_table(&dynamodb, &name).await?;
                table_state = TableState::Created;
                name
            }
        };

        let wanted: Vec<_> = template
            .functions()
            .into_iter()
            .filter(|f| {
                opts.functions
                    .as_ref()
                    .is_none_or(|names| names.contains(&f.binary))
            })
            .collect();
        let names: Vec<&str> = wanted.iter().map(|f| f.binary.as_str()).collect();
        let profile = opts.profile;
        let owned: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let paths = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            build::binaries(&refs, profile)
        })
        .await??;

        let auth = DevAuth::default();
        let dynamodb_proxy = if opts.count_dynamodb {
            Some(CountingProxy::start(&dynamodb_endpoint).await?)
        } else {
            None
        };
        let function_dynamodb = dynamodb_proxy
            .as_ref()
            .map_or(dynamodb_endpoint.clone(), |p| p.endpoint.clone());
        let mut env = base_env(&function_dynamodb, &table, &auth);
        let origins: Vec<&str> = LOCAL_ORIGINS
            .iter()
            .copied()
            .chain(opts.allow_origins.iter().map(String::as_str))
            .collect();
        for (name, value) in &mut env {
            if name == "ALLOWED_ORIGINS" {
                *value = origins.join(",");
            }
        }
        if opts.gateway_authorizer {
            env.retain(|(k, _)| k != "AUTH_JWT_SECRET");
        }
        // The gateway's address is known before any function starts.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        env.push(("CHATKIT_URL".into(), format!("{url}/api/v1/chatkit")));

        let uses = |name: &str| wanted.iter().any(|f| f.env_names.iter().any(|n| n == name));
        let mut secrets = None;
        let mut openai = None;
        if uses("OPENAI_SECRET_ARN") {
            let moto_endpoint = moto_endpoint(&opts).await?;
            let value = opts
                .openai_secret
                .clone()
                .unwrap_or_else(|| STUB_OPENAI_KEY.into());
            let arn = emulators::aws::secrets_client(&moto_endpoint)
                .await
                .create_secret()
                .name(format!(
                    "taskpilot/openai-{}",
                    ulid::Ulid::new().to_string().to_lowercase()
                ))
                .secret_string(value)
                .send()
                .await?
                .arn()
                .map(str::to_owned)
                .ok_or("moto returned no ARN")?;
            let proxy = CountingProxy::start(&moto_endpoint).await?;
            env.push((
                "AWS_ENDPOINT_URL_SECRETS_MANAGER".into(),
                proxy.endpoint.clone(),
            ));
            env.push(("OPENAI_SECRET_ARN".into(), arn.clone()));
            let base_url = match &opts.openai_base_url {
                Some(url) => url.clone(),
                None => {
                    let stub = OpenAiStub::start(STUB_OPENAI_KEY, &[STUB_WORKFLOW]).await?;
                    let base = stub.base_url.clone();
                    openai = Some(stub);
                    base
                }
            };
            env.push(("OPENAI_BASE_URL".into(), base_url));
            secrets = Some(SecretsSide {
                moto_endpoint,
                arn,
                proxy,
            });
        }
        let mut files = None;
        if uses("ATTACHMENTS_BUCKET") {
            let moto_endpoint = moto_endpoint(&opts).await?;
            let s3 = s3_client(&moto_endpoint).await;
            let front;
            let bucket;
            if let Some(dir) = &opts.files_dir {
                // Kept: a stable name, the objects put back from the folder
                // before the front mirrors anything into it.
                bucket = format!("{table}-attachments");
                template.create_bucket(&s3, &bucket, &origins).await?;
                let restored = emulators::s3_mirror::restore(&s3, &bucket, dir).await?;
                if opts.echo_logs && restored > 0 {
                    eprintln!("attachments: {restored} kept objects restored into {bucket}");
                }
                front =
                    S3Front::start_mirrored(&moto_endpoint, "test", "test", &bucket, dir).await?;
            } else {
                bucket = format!(
                    "attachments-{}",
                    ulid::Ulid::new().to_string().to_lowercase()
                );
                template.create_bucket(&s3, &bucket, &origins).await?;
                front = S3Front::start(&moto_endpoint, "test", "test").await?;
            }
            env.push(("AWS_ENDPOINT_URL_S3".into(), front.endpoint.clone()));
            env.push(("ATTACHMENTS_BUCKET".into(), bucket.clone()));
            files = Some(FilesSide { bucket, front, s3 });
        }
        env.extend(opts.env.iter().cloned());

        let mut functions = BTreeMap::new();
        let mut bindings = Vec::new();
        for (f, binary) in wanted.iter().zip(paths) {
            let function = LambdaFunction::new(FunctionConfig {
                name: f.binary.clone(),
                binary,
                env: env.clone(),
                timeout: opts
                    .function_timeout
                    .unwrap_or(Duration::from_secs(f.timeout_secs)),
                max_instances: opts.max_instances,
                echo_logs: opts.echo_logs,
            });
            for route in &f.routes {
                bindings.push(Binding {
                    route: route.clone(),
                    function: function.clone(),
                    authorized: !route.public,
                });
            }
            functions.insert(f.binary.clone(), function);
        }
        let authorizer = opts.gateway_authorizer.then(|| JwtAuthorizer {
            secret: auth.secret.clone(),
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
        });
        let responses = gateway::serve_with(
            listener,
            bindings,
            authorizer,
            gateway::ServeOptions {
                echo: opts.log_requests,
                page: opts
                    .page
                    .then(|| emulators::dev_page::DevPage::new(auth.clone(), "dev-user")),
            },
        )?;
        Ok(Self {
            url,
            table,
            table_state,
            dynamodb_endpoint,
            dynamodb,
            auth,
            functions,
            secrets,
            openai,
            dynamodb_proxy,
            files,
            responses,
        })
    }

    /// A function by binary name.
    pub fn function(&self, name: &str) -> Result<&LambdaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| format!("function {name} is not running").into())
    }

    /// A bearer token for `sub`.
    pub fn token(&self, sub: &str) -> String {
        self.auth.token(sub)
    }
}
