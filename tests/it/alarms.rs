//! Operating it: what `sam deploy` creates (SAM's own translation of the
//! template) ships every function behind an alias that a canary deploy
//! shifts and rolls back on the new version's alarms; every alarm is
//! actionable and watches a metric that exists — an AWS metric of a resource
//! of this stack, or an EMF metric the functions print (captured here from
//! the real binaries, so a renamed metric fails).
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use emulators::supervised::venv_tool;
use serde_json::{Value, json};
use taskpilot_testkit::openai_stub::Fault;
use taskpilot_testkit::repo_root;

use crate::common::{Api, chatkit};

/// The alias every invoker invokes.
const ALIAS: &str = "live";

/// `template.yaml` as SAM translates it for deployment, with `parameters`
/// (the rest at their defaults).
fn translate(parameters: &[(&str, &str)]) -> Value {
    let sam = venv_tool("sam", "sam.txt", "sam").unwrap();
    let out = Command::new(sam.with_file_name("python"))
        .arg(repo_root().join("tests/tools/sam_translate.py"))
        .arg(repo_root().join("template.yaml"))
        .args(parameters.iter().map(|(k, v)| format!("{k}={v}")))
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SAM translator refused the template ({parameters:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The translation for each `AuthMode`, made once.
fn deployed() -> &'static [(&'static str, Value)] {
    static DEPLOYED: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    DEPLOYED.get_or_init(|| {
        ["apigateway", "function"]
            .into_iter()
            .map(|mode| (mode, translate(&[("AuthMode", mode)])))
            .collect()
    })
}

/// Resources of `kind`, by logical id.
fn resources<'a>(template: &'a Value, kind: &str) -> BTreeMap<&'a str, &'a Value> {
    template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

/// `{"Ref": x}` → x.
fn reference(v: &Value) -> Option<&str> {
    v.get("Ref")?.as_str()
}

/// The alarm names (`Ref`s) a deployment group rolls back on.
fn rollback_alarms(group: &Value) -> BTreeSet<&str> {
    let config = &group["Properties"]["AlarmConfiguration"];
    assert_eq!(config["Enabled"], true, "{group}");
    config["Alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| reference(&a["Name"]).unwrap())
        .collect()
}

/// One metric an alarm reads.
#[derive(Debug)]
struct Watched {
    namespace: String,
    metric: String,
    dims: Vec<(String, Value)>,
}

/// Every metric an alarm reads, from its own fields or its metric-math
/// `MetricStat`s.
fn alarm_metrics(alarm: &Value) -> Vec<Watched> {
    let dims = |d: &Value| -> Vec<(String, Value)> {
        d.as_array()
            .map(|d| {
                d.iter()
                    .map(|d| (d["Name"].as_str().unwrap().to_owned(), d["Value"].clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let p = &alarm["Properties"];
    if let Some(metrics) = p["Metrics"].as_array() {
        metrics
            .iter()
            .filter_map(|m| m.get("MetricStat"))
            .map(|s| {
                let m = &s["Metric"];
                Watched {
                    namespace: m["Namespace"].as_str().unwrap().to_owned(),
                    metric: m["MetricName"].as_str().unwrap().to_owned(),
                    dims: dims(&m["Dimensions"]),
                }
            })
            .collect()
    } else {
        vec![Watched {
            namespace: p["Namespace"].as_str().unwrap().to_owned(),
            metric: p["MetricName"].as_str().unwrap().to_owned(),
            dims: dims(&p["Dimensions"]),
        }]
    }
}

#[test]
fn every_function_runs_behind_an_alias_that_a_canary_shifts_and_rolls_back_on_its_alarms() {
    for (mode, t) in deployed() {
        let functions = resources(t, "AWS::Lambda::Function");
        let aliases = resources(t, "AWS::Lambda::Alias");
        let groups = resources(t, "AWS::CodeDeploy::DeploymentGroup");
        let versions = resources(t, "AWS::Lambda::Version");
        let alarms = resources(t, "AWS::CloudWatch::Alarm");
        assert_eq!(functions.len(), 4, "{mode}");
        for function in functions.keys() {
            let (alias_id, alias) = aliases
                .iter()
                .find(|(_, a)| reference(&a["Properties"]["FunctionName"]) == Some(function))
                .unwrap_or_else(|| panic!("{mode}: {function} has no alias"));
            assert_eq!(alias["Properties"]["Name"], ALIAS, "{mode}: {alias_id}");
            // The alias points at this deploy's version, and CodeDeploy moves it.
            let version = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
                .as_str()
                .unwrap();
            assert_eq!(
                reference(&versions[version]["Properties"]["FunctionName"]),
                Some(*function)
            );
            let update = &alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"];
            let group_id = reference(&update["DeploymentGroupName"])
                .unwrap_or_else(|| panic!("{mode}: {alias_id} is not shifted by CodeDeploy"));
            let group = groups[group_id];
            let config = &group["Properties"]["DeploymentConfigName"]["Fn::Sub"];
            assert_eq!(
                (config[0].as_str(), config[1]["ConfigName"].as_str()),
                (
                    Some("CodeDeployDefault.Lambda${ConfigName}"),
                    Some("Canary10Percent5Minutes")
                ),
                "{mode}: {function} deploys as a canary by default"
            );
            let events = &group["Properties"]["AutoRollbackConfiguration"];
            assert_eq!(events["Enabled"], true);
            assert!(
                events["Events"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("DEPLOYMENT_STOP_ON_ALARM")),
                "{mode}: {group_id}"
            );
            // It rolls back on the error rate and the duration of the version
            // being deployed, seen through the alias.
            let watched = rollback_alarms(group);
            let mut kinds = BTreeSet::new();
            for name in &watched {
                let alarm = alarms
                    .get(name)
                    .unwrap_or_else(|| panic!("{mode}: {group_id} watches {name}, no alarm"));
                for Watched {
                    namespace,
                    metric,
                    dims,
                } in alarm_metrics(alarm)
                {
                    assert_eq!(namespace, "AWS/Lambda", "{name}");
                    kinds.insert(metric);
                    let dims: BTreeMap<String, Value> = dims.into_iter().collect();
                    assert_eq!(reference(&dims["FunctionName"]), Some(*function), "{name}");
                    assert_eq!(
                        dims["Resource"],
                        json!({"Fn::Sub": format!("${{{function}}}:{ALIAS}")}),
                        "{name}"
                    );
                    assert_eq!(
                        dims["ExecutedVersion"],
                        json!({"Fn::GetAtt": [version, "Version"]}),
                        "{name} watches the new version"
                    );
                }
            }
            assert_eq!(
                kinds,
                BTreeSet::from(["Duration".into(), "Errors".into(), "Invocations".into()]),
                "{mode}: {function}'s rollback alarms"
            );
        }
    }
}

#[test]
fn the_deployment_type_parameter_chooses_the_traffic_shift() {
    let all_at_once = translate(&[("DeploymentType", "AllAtOnce")]);
    let groups = resources(&all_at_once, "AWS::CodeDeploy::DeploymentGroup");
    assert_eq!(groups.len(), 4);
    for (id, group) in groups {
        assert_eq!(
            group["Properties"]["DeploymentConfigName"]["Fn::Sub"][1]["ConfigName"], "AllAtOnce",
            "{id}"
        );
    }
    // Every choice offered is one of CodeDeploy's predefined Lambda configs.
    let (_, t) = &deployed()[0];
    let offered: BTreeSet<&str> = t["Parameters"]["DeploymentType"]["AllowedValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let predefined: BTreeSet<&str> = [
        "Canary10Percent5Minutes",
        "Canary10Percent10Minutes",
        "Canary10Percent15Minutes",
        "Canary10Percent30Minutes",
        "Linear10PercentEvery1Minute",
        "Linear10PercentEvery2Minutes",
        "Linear10PercentEvery3Minutes",
        "Linear10PercentEvery10Minutes",
        "AllAtOnce",
    ]
    .into();
    assert_eq!(offered, predefined);
}

/// Where `value` names `function` itself rather than one of its aliases:
/// `Ref`, `GetAtt .Arn`, or `${fn}`/`${fn.Arn}` in a `Sub` not followed by
/// `:<alias>`.
fn names_unqualified(value: &Value, function: &str) -> bool {
    match value {
        Value::Object(m) => {
            if m.get("Ref").and_then(Value::as_str) == Some(function) {
                return true;
            }
            if let Some(Value::Array(a)) = m.get("Fn::GetAtt")
                && a.first().and_then(Value::as_str) == Some(function)
            {
                return true;
            }
            if let Some(sub) = m.get("Fn::Sub") {
                let text = match sub {
                    Value::String(s) => s.as_str(),
                    Value::Array(a) => a.first().and_then(Value::as_str).unwrap_or(""),
                    _ => "",
                };
                for token in [format!("${{{function}}}"), format!("${{{function}.Arn}}")] {
                    for (at, _) in text.match_indices(&token) {
                        if !text[at + token.len()..].starts_with(&format!(":{ALIAS}")) {
                            return true;
                        }
                    }
                }
            }
            m.values().any(|v| names_unqualified(v, function))
        }
        Value::Array(a) => a.iter().any(|v| names_unqualified(v, function)),
        _ => false,
    }
}

#[test]
fn everything_that_invokes_a_function_invokes_its_alias() {
    // Resources that may name a function itself: its versions and alias,
    // the metrics (dimension FunctionName is the unqualified name), and its
    // log group wiring.
    let describe_only = [
        "AWS::Lambda::Function",
        "AWS::Lambda::Version",
        "AWS::Lambda::Alias",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",
    ];
    for (mode, t) in deployed() {
        let functions = resources(t, "AWS::Lambda::Function");
        let aliases: BTreeMap<&str, &str> = resources(t, "AWS::Lambda::Alias")
            .into_iter()
            .map(|(id, a)| (reference(&a["Properties"]["FunctionName"]).unwrap(), id))
            .collect();
        for (id, resource) in t["Resources"].as_object().unwrap() {
            let kind = resource["Type"].as_str().unwrap();
            if describe_only.contains(&kind) {
                continue;
            }
            for function in functions.keys() {
                assert!(
                    !names_unqualified(resource, function),
                    "{mode}: {id} ({kind}) names {function} itself, not its alias `{ALIAS}`"
                );
            }
        }
        // And each kind of invoker is there, on an alias.
        let target = |r: &Value, field: &str| -> String {
            reference(&r["Properties"][field])
                .map(str::to_owned)
                .unwrap_or_else(|| r["Properties"][field].to_string())
        };
        let alias_ids: BTreeSet<&str> = aliases.values().copied().collect();
        let permissions = resources(t, "AWS::Lambda::Permission");
        assert!(permissions.len() >= 5, "{mode}");
        for (id, p) in permissions {
            let f = target(p, "FunctionName");
            assert!(alias_ids.contains(f.as_str()), "{mode}: {id} → {f}");
        }
        let urls = resources(t, "AWS::Lambda::Url");
        assert_eq!(urls.len(), 1, "{mode}");
        for (id, u) in urls {
            let f = target(u, "TargetFunctionArn");
            assert!(alias_ids.contains(f.as_str()), "{mode}: {id} → {f}");
        }
        let rules = resources(t, "AWS::Events::Rule");
        assert_eq!(rules.len(), 1, "{mode}");
        for (id, rule) in rules {
            for target in rule["Properties"]["Targets"].as_array().unwrap() {
                let f = reference(&target["Arn"]).unwrap();
                assert!(alias_ids.contains(f), "{mode}: {id} → {f}");
            }
        }
        let integrations = resources(t, "AWS::ApiGatewayV2::Integration");
        assert_eq!(integrations.len(), 3, "{mode}");
        for (id, i) in integrations {
            let uri = i["Properties"]["IntegrationUri"]["Fn::Sub"]
                .as_str()
                .unwrap();
            let function = uri
                .strip_prefix("${")
                .and_then(|u| u.strip_suffix(&format!(".Arn}}:{ALIAS}")))
                .unwrap_or_else(|| panic!("{mode}: {id} invokes {uri}"));
            // Created after the alias it invokes.
            assert_eq!(
                i["DependsOn"].as_str(),
                Some(aliases[function]),
                "{mode}: {id}"
            );
        }
    }
}

#[test]
fn chatkit_has_reserved_concurrency_unless_the_parameter_is_zero() {
    let (_, t) = &deployed()[0];
    assert_eq!(
        t["Resources"]["ChatKitFunction"]["Properties"]["ReservedConcurrentExecutions"],
        json!({"Fn::If": ["ReserveChatKitConcurrency",
            {"Ref": "ChatKitReservedConcurrency"}, {"Ref": "AWS::NoValue"}]})
    );
    assert_eq!(
        t["Conditions"]["ReserveChatKitConcurrency"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "ChatKitReservedConcurrency"}, "0"]}]})
    );
    let p = &t["Parameters"]["ChatKitReservedConcurrency"];
    assert!(
        p["Default"].as_u64().unwrap() > 0,
        "a default that protects the account"
    );
    assert_eq!(p["MinValue"], 0);
}

/// GitHub's anchor for a heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alarm_is_actionable_and_one_composite_alarm_pages() {
    let runbook = std::fs::read_to_string(repo_root().join("docs/runbook.md")).unwrap();
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let (_, t) = &deployed()[0];
    let alarms = resources(t, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 20, "{}", alarms.len());
    let mut thresholds = BTreeSet::new();
    for (id, alarm) in &alarms {
        let p = &alarm["Properties"];
        assert!(
            ["breaching", "notBreaching", "ignore", "missing"]
                .contains(&p["TreatMissingData"].as_str().unwrap_or("")),
            "{id} states TreatMissingData"
        );
        let description = p["AlarmDescription"].as_str().unwrap();
        let section = description
            .split("docs/runbook.md#")
            .nth(1)
            .unwrap_or_else(|| panic!("{id}'s description names no runbook section"))
            .split_whitespace()
            .next()
            .unwrap();
        assert!(
            sections.contains(section),
            "{id} points to docs/runbook.md#{section}, which has no such section"
        );
        // Only the composite alarm notifies.
        for actions in ["AlarmActions", "OKActions", "InsufficientDataActions"] {
            assert!(p.get(actions).is_none(), "{id} has {actions}");
        }
        match reference(&p["Threshold"]) {
            Some(parameter) => {
                assert!(
                    parameter.starts_with("Alarm") && t["Parameters"].get(parameter).is_some(),
                    "{id}: threshold {parameter}"
                );
                thresholds.insert(parameter);
            }
            // A fixed threshold of 1: one probe failure, one rejected key.
            None => assert_eq!(p["Threshold"], 1, "{id}"),
        }
    }
    // Every threshold parameter is used, and documented in the README.
    let parameters: BTreeSet<&str> = t["Parameters"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|p| p.starts_with("Alarm") && *p != "AlarmEmail")
        .collect();
    assert_eq!(thresholds, parameters);
    for parameter in
        parameters
            .iter()
            .chain(&["DeploymentType", "ChatKitReservedConcurrency", "AlarmEmail"])
    {
        assert!(
            readme.contains(&format!("`{parameter}`")),
            "README's parameter table lacks {parameter}"
        );
    }
    // One composite alarm over every other alarm, notifying the one topic.
    let composites = resources(t, "AWS::CloudWatch::CompositeAlarm");
    assert_eq!(composites.len(), 1);
    let (id, composite) = composites.into_iter().next().unwrap();
    let p = &composite["Properties"];
    assert_eq!(p["AlarmActions"], json!([{"Ref": "AlarmTopic"}]), "{id}");
    assert_eq!(p["OKActions"], json!([{"Ref": "AlarmTopic"}]), "{id}");
    assert_eq!(p["AlarmRule"]["Fn::Join"][0], " OR ");
    let children: Vec<&str> = p["AlarmRule"]["Fn::Join"][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["Fn::Sub"]
                .as_str()
                .and_then(|s| s.strip_prefix("ALARM(${"))
                .and_then(|s| s.strip_suffix(".Arn})"))
                .unwrap_or_else(|| panic!("{id}: {c}"))
        })
        .collect();
    let unique: BTreeSet<&str> = children.iter().copied().collect();
    assert_eq!(unique.len(), children.len(), "an alarm twice in {id}");
    assert_eq!(unique, alarms.keys().copied().collect::<BTreeSet<_>>());
    assert!(
        p["AlarmDescription"]
            .as_str()
            .unwrap()
            .contains("docs/runbook.md#taskpilot-unhealthy")
    );
    assert!(sections.contains("taskpilot-unhealthy"));
    // The topic always exists; the e-mail subscription only when asked for.
    assert_eq!(t["Resources"]["AlarmTopic"]["Type"], "AWS::SNS::Topic");
    assert!(t["Resources"]["AlarmTopic"].get("Condition").is_none());
    assert_eq!(
        t["Resources"]["AlarmEmailSubscription"]["Condition"],
        "NotifyByEmail"
    );
}

/// The AWS metrics an alarm may use, by namespace: the metric names, and the
/// dimension that ties it to a resource of this stack (with the resource's
/// type).
fn aws_metric(namespace: &str) -> Option<(&'static [&'static str], &'static str, &'static str)> {
    match namespace {
        "AWS/Lambda" => Some((
            &["Errors", "Invocations", "Duration", "Throttles"],
            "FunctionName",
            "AWS::Lambda::Function",
        )),
        "AWS/ApiGateway" => Some((
            &["5xx", "4xx", "Count", "Latency", "IntegrationLatency"],
            "ApiId",
            "AWS::ApiGatewayV2::Api",
        )),
        "AWS/DynamoDB" => Some((
            &["ThrottledRequests", "SystemErrors"],
            "TableName",
            "AWS::DynamoDB::Table",
        )),
        _ => None,
    }
}

/// The DynamoDB operations the product calls (`.get_item()` → `GetItem`).
fn dynamodb_operations_called() -> BTreeSet<String> {
    let calls = [
        ("get_item", "GetItem"),
        ("put_item", "PutItem"),
        ("update_item", "UpdateItem"),
        ("delete_item", "DeleteItem"),
        ("query", "Query"),
        ("scan", "Scan"),
        ("batch_write_item", "BatchWriteItem"),
        ("batch_get_item", "BatchGetItem"),
        ("transact_write_items", "TransactWriteItems"),
        ("transact_get_items", "TransactGetItems"),
    ];
    let sources = product_sources();
    calls
        .into_iter()
        .filter(|(call, _)| sources.contains(&format!(".{call}()")))
        .map(|(_, operation)| operation.to_owned())
        .collect()
}

#[test]
fn every_aws_metric_an_alarm_watches_belongs_to_a_resource_of_this_stack() {
    let operations = dynamodb_operations_called();
    assert!(operations.contains("TransactWriteItems"), "{operations:?}");
    for (mode, t) in deployed() {
        let functions = resources(t, "AWS::Lambda::Function");
        for (id, alarm) in resources(t, "AWS::CloudWatch::Alarm") {
            let mut table_operations = BTreeSet::new();
            for Watched {
                namespace,
                metric,
                dims,
            } in alarm_metrics(alarm)
            {
                if namespace == "TaskPilot" {
                    continue; // Checked against the functions' own lines below.
                }
                let (names, dimension, kind) = aws_metric(&namespace)
                    .unwrap_or_else(|| panic!("{id}: unknown namespace {namespace}"));
                assert!(
                    names.contains(&metric.as_str()),
                    "{id}: {namespace} {metric}"
                );
                let dims: BTreeMap<String, Value> = dims.into_iter().collect();
                let resource = reference(&dims[dimension])
                    .unwrap_or_else(|| panic!("{mode}: {id}: {dimension} is not a Ref"));
                assert_eq!(
                    t["Resources"][resource]["Type"], kind,
                    "{mode}: {id} watches {resource}"
                );
                if let Some(op) = dims.get("Operation") {
                    table_operations.insert(op.as_str().unwrap().to_owned());
                }
            }
            // A table alarm sums every operation the functions call.
            if !table_operations.is_empty() {
                assert_eq!(table_operations, operations, "{id}");
                let expression = alarm["Properties"]["Metrics"][0]["Expression"]
                    .as_str()
                    .unwrap();
                let ids: Vec<&str> = alarm["Properties"]["Metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .skip(1)
                    .map(|m| m["Id"].as_str().unwrap())
                    .collect();
                assert_eq!(expression, format!("SUM([{}])", ids.join(", ")), "{id}");
            }
        }
        // A duration alarm compares p99 with the function's own timeout.
        for (function, f) in &functions {
            let timeout_ms = f["Properties"]["Timeout"].as_u64().unwrap() * 1000;
            let alarm =
                &t["Resources"][format!("{}DurationAlarm", function.trim_end_matches("Function"))];
            let metrics = alarm["Properties"]["Metrics"].as_array().unwrap();
            assert_eq!(
                metrics[0]["Expression"],
                format!("100 * duration / {timeout_ms}"),
                "{mode}: {function}'s Timeout"
            );
            assert_eq!(metrics[1]["MetricStat"]["Stat"], "p99");
        }
    }
}

/// Every TaskPilot metric the alarms watch, with the alarm's id.
fn emf_alarm_metrics() -> Vec<(String, Watched)> {
    let (_, t) = &deployed()[0];
    resources(t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .flat_map(|(id, alarm)| {
            alarm_metrics(alarm)
                .into_iter()
                .filter(|w| w.namespace == "TaskPilot")
                .map(move |w| (id.to_owned(), w))
        })
        .collect()
}

/// Whether an EMF line carries `metric` with exactly these dimensions
/// (CloudWatch matches a metric by its whole set of dimensions).
fn emits(line: &Value, Watched { metric, dims, .. }: &Watched) -> bool {
    let Some(directives) = line["_aws"]["CloudWatchMetrics"].as_array() else {
        return false;
    };
    let wanted: BTreeSet<&str> = dims.iter().map(|(k, _)| k.as_str()).collect();
    directives.iter().any(|d| {
        d["Namespace"] == "TaskPilot"
            && d["Metrics"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["Name"] == metric.as_str()))
            && d["Dimensions"].as_array().is_some_and(|sets| {
                sets.iter().any(|set| {
                    set.as_array().is_some_and(|set| {
                        set.iter()
                            .filter_map(Value::as_str)
                            .collect::<BTreeSet<_>>()
                            == wanted
                    })
                })
            })
            && line[metric.as_str()].is_number()
            && dims.iter().all(|(k, v)| &line[k] == v)
    })
}

/// The EMF lines a function printed so far.
fn emf_lines(api: &Api, function: &str) -> Vec<Value> {
    api.stack
        .function(function)
        .unwrap()
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// Waits (generously) until `function` printed a line `wanted` accepts.
async fn wait_for_emf(api: &Api, function: &str, wanted: impl Fn(&Value) -> bool) -> bool {
    api.stack
        .function(function)
        .unwrap()
        .wait_for_log(
            |l| serde_json::from_str::<Value>(l).is_ok_and(|v| wanted(&v)),
            Duration::from_secs(60),
        )
        .await
        .is_some()
}

async fn turn(api: &Api, text: &str) -> Vec<Value> {
    let (status, events, _, _) = chatkit(
        api,
        "alice",
        json!({"type": "threads.create", "params": {"input": {"content": [
            {"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}}}),
    )
    .await;
    assert_eq!(status, 200);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_alarm_on_an_emf_metric_watches_a_line_the_functions_print() {
    let watched = emf_alarm_metrics();
    assert!(watched.len() >= 6, "{watched:?}");
    let api = Api::start_env(&["chatkit", "health"], &[("OPENAI_TIMEOUT_MS", "1500")]).await;
    let stub = api.stack.openai.as_ref().unwrap();
    // The probe, healthy.
    let health = api.stack.function("health").unwrap();
    health
        .invoke(taskpilot_testkit::events::scheduled_event().to_string())
        .await
        .expect("a healthy probe");
    // A turn that answers: a stream, and its time to first token.
    let events = turn(&api, "hello").await;
    assert!(!events.iter().any(|e| e["type"] == "error"), "{events:?}");
    // OpenAI failing in each way an alarm names: the turn's stream ends in
    // `stream.error` each time.
    let status = |status, retry_after| Fault::Status {
        status,
        retry_after,
    };
    let failures = [
        ("server_error", vec![status(500, None); 3]),
        ("rate_limited", vec![status(429, Some(1)); 3]),
        ("timeout", vec![Fault::Slow(Duration::from_secs(20)); 3]),
        // The stub stops accepting the key (the client refreshes it once).
        ("auth", vec![]),
    ];
    for (kind, faults) in failures {
        if kind == "auth" {
            stub.set_key("sk-revoked");
        }
        for fault in faults {
            stub.push_fault(fault);
        }
        let events = turn(&api, kind).await;
        stub.clear_faults();
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "error" && e["code"] == "stream.error"),
            "{kind}: {events:?}"
        );
        assert!(
            wait_for_emf(&api, "chatkit", |v| v["OpenAiFailures"] == 1
                && v["Kind"] == kind)
            .await,
            "no OpenAiFailures line with Kind={kind}:\n{}",
            api.stack.function("chatkit").unwrap().logs().join("\n")
        );
    }
    // One stream line per turn (one clean, four failed), printed when the
    // stream ends: wait for the fifth.
    let started = std::time::Instant::now();
    while emf_lines(&api, "chatkit")
        .iter()
        .filter(|l| l["ChatStreams"] == 1)
        .count()
        < 5
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "five ChatStreams lines"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines: Vec<Value> = ["chatkit", "health"]
        .iter()
        .flat_map(|f| emf_lines(&api, f))
        .collect();
    let streams: Vec<&Value> = lines.iter().filter(|l| l["ChatStreams"] == 1).collect();
    assert_eq!(
        streams
            .iter()
            .map(|l| l["ChatStreamErrors"].as_u64().unwrap())
            .sum::<u64>(),
        4,
        "{streams:?}"
    );
    assert!(streams.iter().any(|l| l["TimeToFirstToken"].is_u64()));
    for (alarm, metric) in &watched {
        assert!(
            lines.iter().any(|l| emits(l, metric)),
            "{alarm} watches {metric:?}, which no function printed:\n{}",
            lines
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Every `.rs` file's text under `shared/` and `functions/`.
fn product_sources() -> String {
    let mut text = String::new();
    let mut dirs = vec![repo_root().join("shared"), repo_root().join("functions")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    text
}

#[test]
fn the_dashboard_shows_metrics_that_exist() {
    let (_, t) = &deployed()[0];
    let body = t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .unwrap();
    // Every `${…}` is a resource of the stack or a pseudo parameter, and
    // what remains is the JSON CloudWatch reads.
    let mut json = String::new();
    let mut rest = body;
    while let Some(at) = rest.find("${") {
        json.push_str(&rest[..at]);
        let end = rest[at..].find('}').unwrap() + at;
        let name = &rest[at + 2..end];
        assert!(
            name.starts_with("AWS::") || t["Resources"].get(name).is_some(),
            "the dashboard names ${{{name}}}, not in the stack"
        );
        json.push('x');
        rest = &rest[end + 1..];
    }
    json.push_str(rest);
    let dashboard: Value = serde_json::from_str(&json).unwrap();
    let sources = product_sources();
    let mut shown = BTreeSet::new();
    for widget in dashboard["widgets"].as_array().unwrap() {
        for metric in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let (namespace, name) = (metric[0].as_str().unwrap(), metric[1].as_str().unwrap());
            if namespace == "TaskPilot" {
                assert!(
                    sources.contains(&format!("\"{name}\"")),
                    "the dashboard shows TaskPilot › {name}, which no function names"
                );
                shown.insert(name);
            } else {
                let (names, _, _) = aws_metric(namespace).unwrap_or_else(|| {
                    panic!("the dashboard shows {namespace}, not a namespace of this stack")
                });
                let extra = [
                    "ConcurrentExecutions",
                    "ConsumedReadCapacityUnits",
                    "ConsumedWriteCapacityUnits",
                    "SuccessfulRequestLatency",
                ];
                assert!(
                    names.contains(&name) || extra.contains(&name),
                    "{namespace} {name}"
                );
            }
        }
    }
    // Everything an alarm watches is on the dashboard.
    for (alarm, watched) in emf_alarm_metrics() {
        assert!(
            shown.contains(watched.metric.as_str()),
            "{alarm}: {watched:?}"
        );
    }
}
