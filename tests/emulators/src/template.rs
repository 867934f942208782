//! Reading `template.yaml`, so the local stack and the tests use exactly the
//! table and routes that ship.

use std::path::Path;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use serde_norway::Value;

use crate::{Result, workspace_root};

/// The parsed template.
pub struct Template {
    root: Value,
}

/// One HTTP API route of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's logical id, e.g. `ListTasksRoute`.
    pub name: String,
    /// `GET`, `POST`, … or `ANY`.
    pub method: String,
    /// Path template, e.g. `/api/v1/tasks/{id}`.
    pub path: String,
    /// `AuthorizationType: NONE`: no authorizer runs, whatever the AuthMode.
    pub public: bool,
    /// A Function URL (mounted locally at `/api/v1/<binary>`), not an HTTP API route.
    pub function_url: bool,
}

/// A function of the template.
#[derive(Debug, Clone)]
pub struct Function {
    /// Logical id, e.g. `TasksFunction`.
    pub logical_id: String,
    /// The cargo binary (`BuildProperties.Binary`).
    pub binary: String,
    /// Timeout in seconds.
    pub timeout_secs: u64,
    /// MemorySize in MB (its own, else the Globals', else Lambda's 128).
    pub memory_mb: u64,
    /// HTTP API routes.
    pub routes: Vec<Route>,
    /// Environment variables it sets (own and global).
    pub env_names: Vec<String>,
    /// Whether it has a Schedule event.
    pub scheduled: bool,
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn map_keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .map(|m| m.keys().filter_map(str_of).collect())
        .unwrap_or_default()
}

impl Template {
    /// Loads `template.yaml` at the repository root.
    pub fn load() -> Result<Self> {
        Self::from_path(&workspace_root().join("template.yaml"))
    }

    /// Loads a template file.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self {
            root: serde_norway::from_str(&text)?,
        })
    }

    /// Resources of a CloudFormation type, with their logical ids.
    pub fn resources(&self, kind: &str) -> Vec<(String, &Value)> {
        self.root["Resources"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| r["Type"].as_str() == Some(kind))
                    .filter_map(|(id, r)| Some((str_of(id)?, r)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The functions with their binaries and the HTTP API routes that reach them
    /// (`AWS::ApiGatewayV2::Route` → integration → function).
    pub fn functions(&self) -> Vec<Function> {
        let global_memory = self.root["Globals"]["Function"]["MemorySize"]
            .as_u64()
            .unwrap_or(128);
        let global_timeout = self.root["Globals"]["Function"]["Timeout"]
            .as_u64()
            .unwrap_or(3);
        let global_env = map_keys(&self.root["Globals"]["Function"]["Environment"]["Variables"]);
        // integration logical id -> function logical id
        let integrations: Vec<(String, String)> = self
            .resources("AWS::ApiGatewayV2::Integration")
            .into_iter()
            .filter_map(|(id, r)| {
                let function = integration_function(&r["Properties"]["IntegrationUri"])?;
                Some((id, function))
            })
            .collect();
        let routes: Vec<(String, Route)> = self
            .resources("AWS::ApiGatewayV2::Route")
            .into_iter()
            .filter_map(|(name, r)| {
                let props = properties(r);
                let key = props["RouteKey"].as_str()?;
                let target = intrinsic(&props["Target"], "Sub")?;
                let integration = target.strip_prefix("integrations/${")?.strip_suffix('}')?;
                let function = integrations
                    .iter()
                    .find(|(i, _)| i == integration)?
                    .1
                    .clone();
                let (method, path) = match key.split_once(' ') {
                    Some((m, p)) => (m.to_owned(), p.to_owned()),
                    None => ("ANY".to_owned(), key.to_owned()),
                };
                let public = props["AuthorizationType"].as_str() == Some("NONE");
                Some((
                    function,
                    Route {
                        name,
                        method,
                        path,
                        public,
                        function_url: false,
                    },
                ))
            })
            .collect();
        self.resources("AWS::Serverless::Function")
            .into_iter()
            .map(|(logical_id, r)| {
                let props = &r["Properties"];
                let scheduled = props["Events"]
                    .as_mapping()
                    .into_iter()
                    .flatten()
                    .any(|(_, e)| matches!(e["Type"].as_str(), Some("Schedule" | "ScheduleV2")));
                let mut env_names = global_env.clone();
                env_names.extend(map_keys(&props["Environment"]["Variables"]));
                let binary = r["Metadata"]["BuildProperties"]["Binary"]
                    .as_str()
                    .unwrap_or_default();
                let mut own_routes: Vec<Route> = routes
                    .iter()
                    .filter(|(f, _)| *f == logical_id)
                    .map(|(_, route)| route.clone())
                    .collect();
                if props["FunctionUrlConfig"].is_mapping() {
                    own_routes.push(Route {
                        name: format!("{logical_id}Url"),
                        method: "ANY".into(),
                        path: format!("/api/v1/{binary}"),
                        public: true,
                        function_url: true,
                    });
                }
                Function {
                    binary: r["Metadata"]["BuildProperties"]["Binary"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    timeout_secs: props["Timeout"].as_u64().unwrap_or(global_timeout),
                    memory_mb: props["MemorySize"].as_u64().unwrap_or(global_memory),
                    routes: own_routes,
                    logical_id,
                    env_names,
                    scheduled,
                }
            })
            .collect()
    }

    /// Creates bucket `name` in an S3 emulator with the settings of the
    /// template's attachments bucket: encryption, public access block, CORS
    /// (`!Ref AllowedOrigins` as `origins`) and lifecycle rules.
    pub async fn create_bucket(
        &self,
        s3: &aws_sdk_s3::Client,
        name: &str,
        origins: &[&str],
    ) -> Result<()> {
        use aws_sdk_s3::types::{
            BucketLifecycleConfiguration, CorsConfiguration, CorsRule, ExpirationStatus,
            LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
            PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
            ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag,
        };
        let (_, bucket) = self
            .resources("AWS::S3::Bucket")
            .into_iter()
            .next()
            .ok_or("template.yaml has no AWS::S3::Bucket")?;
        let props = &bucket["Properties"];
        s3.create_bucket().bucket(name).send().await?;
        let strings = |v: &Value| -> Vec<String> {
            match v {
                Value::Tagged(t) if t.tag == "Ref" => {
                    origins.iter().map(|o| (*o).to_owned()).collect()
                }
                v => v
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(str_of)
                    .collect(),
            }
        };
        let sse = &props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
            ["SSEAlgorithm"];
        if let Some(algorithm) = sse.as_str() {
            let rule = ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::from(algorithm))
                        .build()?,
                )
                .build();
            s3.put_bucket_encryption()
                .bucket(name)
                .server_side_encryption_configuration(
                    ServerSideEncryptionConfiguration::builder()
                        .rules(rule)
                        .build()?,
                )
                .send()
                .await?;
        }
        let block = &props["PublicAccessBlockConfiguration"];
        s3.put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(block["BlockPublicAcls"].as_bool() == Some(true))
                    .block_public_policy(block["BlockPublicPolicy"].as_bool() == Some(true))
                    .ignore_public_acls(block["IgnorePublicAcls"].as_bool() == Some(true))
                    .restrict_public_buckets(block["RestrictPublicBuckets"].as_bool() == Some(true))
                    .build(),
            )
            .send()
            .await?;
        let mut cors = CorsConfiguration::builder();
        for rule in props["CorsConfiguration"]["CorsRules"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let mut r = CorsRule::builder()
                .set_allowed_origins(Some(strings(&rule["AllowedOrigins"])))
                .set_allowed_methods(Some(strings(&rule["AllowedMethods"])))
                .set_allowed_headers(Some(strings(&rule["AllowedHeaders"])));
            if let Some(age) = rule["MaxAge"].as_i64() {
                r = r.max_age_seconds(i32::try_from(age)?);
            }
            cors = cors.cors_rules(r.build()?);
        }
        s3.put_bucket_cors()
            .bucket(name)
            .cors_configuration(cors.build()?)
            .send()
            .await?;
        let mut rules = Vec::new();
        for rule in props["LifecycleConfiguration"]["Rules"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let mut r = LifecycleRule::builder()
                .id(rule["Id"].as_str().unwrap_or_default())
                .status(ExpirationStatus::from(
                    rule["Status"].as_str().unwrap_or("Enabled"),
                ));
            if let Some(days) = rule["ExpirationInDays"].as_i64() {
                r = r.expiration(
                    LifecycleExpiration::builder()
                        .days(i32::try_from(days)?)
                        .build(),
                );
            }
            let filter = match rule["TagFilters"].as_sequence().and_then(|t| t.first()) {
                Some(tag) => LifecycleRuleFilter::builder()
                    .tag(
                        Tag::builder()
                            .key(tag["Key"].as_str().unwrap_or_default())
                            .value(tag["Value"].as_str().unwrap_or_default())
                            .build()?,
                    )
                    .build(),
                None => LifecycleRuleFilter::builder().prefix("").build(),
            };
            r = r.filter(filter);
            if let Some(days) =
                rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"].as_i64()
            {
                r = r.abort_incomplete_multipart_upload(
                    aws_sdk_s3::types::AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(i32::try_from(days)?)
                        .build(),
                );
            }
            rules.push(r.build()?);
        }
        s3.put_bucket_lifecycle_configuration()
            .bucket(name)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .set_rules(Some(rules))
                    .build()?,
            )
            .send()
            .await?;
        Ok(())
    }

    /// Creates `name` in DynamoDB with the key schema, indexes and TTL of the
    /// template's table.
    /// Creates the table `name` unless it exists (a local stack's data kept on
    /// disk, whose items stay).
    pub async fn ensure_table(&self, client: &Client, name: &str) -> Result<TableState> {
        match client.describe_table().table_name(name).send().await {
            Ok(_) => Ok(TableState::Kept),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                self.create_table(client, name).await?;
                Ok(TableState::Created)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the table `name` as the template defines it.
    pub async fn create_table(&self, client: &Client, name: &str) -> Result<()> {
        let (_, table) = self
            .resources("AWS::DynamoDB::Table")
            .into_iter()
            .next()
            .ok_or("template.yaml has no AWS::DynamoDB::Table")?;
        let props = &table["Properties"];
        let mut req = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest);
        for attr in props["AttributeDefinitions"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr["AttributeName"].as_str().unwrap_or_default())
                    .attribute_type(ScalarAttributeType::from(
                        attr["AttributeType"].as_str().unwrap_or("S"),
                    ))
                    .build()?,
            );
        }
        for key in key_schema(&props["KeySchema"])? {
            req = req.key_schema(key);
        }
        for gsi in props["GlobalSecondaryIndexes"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let projection = Projection::builder()
                .projection_type(ProjectionType::from(
                    gsi["Projection"]["ProjectionType"]
                        .as_str()
                        .unwrap_or("ALL"),
                ))
                .build();
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(gsi["IndexName"].as_str().unwrap_or_default())
                    .set_key_schema(Some(key_schema(&gsi["KeySchema"])?))
                    .projection(projection)
                    .build()?,
            );
        }
        req.send().await?;
        let ttl = &props["TimeToLiveSpecification"];
        if ttl["Enabled"].as_bool() == Some(true) {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(ttl["AttributeName"].as_str().unwrap_or("ttl"))
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await?;
        }
        Ok(())
    }
}

/// The argument of `!Name x` / `Fn::Name: x` when it is a plain string.
/// A resource's `Properties`; when the whole block is an `Fn::If`, the branch
/// for a true condition (in this template, `AuthMode=apigateway`, the default).
pub fn properties(resource: &Value) -> &Value {
    let props = &resource["Properties"];
    let branches = match props {
        Value::Tagged(t) if t.tag == "If" => t.value.as_sequence(),
        Value::Mapping(m) => m.get("Fn::If").and_then(Value::as_sequence),
        _ => None,
    };
    match branches {
        Some(b) if b.len() == 3 => &b[1],
        _ => props,
    }
}

/// The function an integration invokes: `!GetAtt <Fn>.Arn`, or one of its
/// aliases, `!Sub "${<Fn>.Arn}:<alias>"`.
fn integration_function(uri: &Value) -> Option<String> {
    if let Some(target) = intrinsic(uri, "GetAtt") {
        return Some(target.split('.').next()?.to_owned());
    }
    let sub = intrinsic(uri, "Sub")?;
    let (function, alias) = sub.strip_prefix("${")?.split_once(".Arn}:")?;
    (!alias.is_empty()).then(|| function.to_owned())
}

/// The string argument of the intrinsic `name` (`Ref`, `GetAtt`…) in its
/// short form (`!Ref x`), or in the `Fn::<name>` long form.
pub fn intrinsic(v: &Value, name: &str) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag == name => t.value.as_str().map(str::to_owned),
        Value::Mapping(m) => m
            .get(format!("Fn::{name}").as_str())
            .and_then(|x| x.as_str())
            .map(str::to_owned),
        _ => None,
    }
}

fn key_schema(v: &Value) -> Result<Vec<KeySchemaElement>> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|k| {
            Ok(KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().unwrap_or_default())
                .key_type(KeyType::from(k["KeyType"].as_str().unwrap_or("HASH")))
                .build()?)
        })
        .collect()
}

/// Whether `path` matches a route template (`{name}` is one segment,
/// `{name+}` the rest); returns the path parameters.
pub fn match_path(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut t = template.trim_start_matches('/').split('/');
    let mut p = path.trim_start_matches('/').split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(seg), Some(value)) if seg.starts_with('{') && seg.ends_with("+}") => {
                let rest: Vec<&str> = std::iter::once(value).chain(p).collect();
                params.push((seg[1..seg.len() - 2].to_owned(), rest.join("/")));
                return Some(params);
            }
            (Some(seg), Some(value)) if seg.starts_with('{') && seg.ends_with('}') => {
                if value.is_empty() {
                    return None;
                }
                params.push((seg[1..seg.len() - 1].to_owned(), value.to_owned()));
            }
            (Some(seg), Some(value)) if seg == value => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates() {
        assert_eq!(match_path("/api/v1/tasks", "/api/v1/tasks"), Some(vec![]));
        assert_eq!(
            match_path("/api/v1/tasks/{id}", "/api/v1/tasks/abc"),
            Some(vec![("id".into(), "abc".into())])
        );
        assert_eq!(match_path("/api/v1/tasks/{id}", "/api/v1/tasks/"), None);
        assert_eq!(match_path("/api/v1/tasks/{id}", "/api/v1/tasks/a/b"), None);
        assert_eq!(
            match_path("/x/{p+}", "/x/a/b"),
            Some(vec![("p".into(), "a/b".into())])
        );
    }

    #[test]
    fn an_integration_reaches_its_function_or_an_alias_of_it() {
        let uri = |yaml: &str| integration_function(&serde_norway::from_str(yaml).unwrap());
        assert_eq!(
            uri("!GetAtt TasksFunction.Arn").as_deref(),
            Some("TasksFunction")
        );
        assert_eq!(
            uri("!Sub \"${TasksFunction.Arn}:live\"").as_deref(),
            Some("TasksFunction")
        );
        assert_eq!(
            uri("Fn::Sub: \"${TasksFunction.Arn}:live\"").as_deref(),
            Some("TasksFunction")
        );
        assert_eq!(uri("!Sub \"${TasksFunction.Arn}:\"").as_deref(), None);
        assert_eq!(uri("!Sub \"${TasksFunction.Arn}\"").as_deref(), None);
        assert_eq!(uri("!Ref TasksFunction").as_deref(), None);
    }

    #[test]
    fn the_shipped_template_reads() {
        let t = Template::load().unwrap();
        let fns = t.functions();
        let tasks = fns.iter().find(|f| f.binary == "tasks").unwrap();
        assert!(
            tasks
                .routes
                .iter()
                .any(|r| r.method == "PATCH" && r.path == "/api/v1/tasks/{id}")
        );
        assert!(tasks.env_names.contains(&"TABLE_NAME".to_owned()));
    }
}

/// What [`Template::ensure_table`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableState {
    /// There was no such table: it was created.
    Created,
    /// The table was there: it was kept, with its items.
    Kept,
}
