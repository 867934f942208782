//! What a request costs, in dollars: AWS Lambda (arm64), API Gateway (HTTP
//! API), DynamoDB on demand, Secrets Manager, S3 and the OpenAI model, from
//! the quantities one request uses ([`Workload`]). Pure arithmetic, no I/O.
//!
//! # Prices
//!
//! Region us-east-1 (US East, N. Virginia), list prices in US dollars: the
//! first volume tier, without free tier, Savings Plans or Batch/Flex
//! discounts. Checked on 2026-12-07 against the pages named on each
//! constant; where only third-party pages could be read (AWS renders its
//! price tables client-side), that is said. Not priced: data transfer out,
//! CloudWatch Logs ingestion, the INIT phase of cold starts (billed for
//! custom runtimes such as `provided.al2023`, so for these functions, at the
//! duration rate), Lambda response streaming beyond 6 MB a request, storage
//! (DynamoDB, S3, the secret's $0.40 a month).

use std::fmt::Write as _;
use std::time::Duration;

/// Lambda duration, arm64, dollars per GB-second (first 7.5 billion GB-s a
/// month). <https://aws.amazon.com/lambda/pricing/>: the page renders its
/// table client-side; the figure is the one third-party copies of it give
/// (cloudchipr.com 2024, the AWS "tiered pricing" post's tiers), unchanged
/// since arm64 launched on 2021-09-29.
pub const LAMBDA_ARM_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// Lambda requests, dollars per million (both architectures; same source).
pub const LAMBDA_PER_MILLION_REQUESTS: f64 = 0.20;
/// API Gateway HTTP API, dollars per million requests (first 300 million a
/// month; each 512 KB of a request or answer is metered as one request).
/// <https://aws.amazon.com/api-gateway/pricing/>, read through third-party
/// copies (apigatewaycost.com, awsforengineers.com 2025-05-19); unchanged
/// since HTTP APIs went GA in March 2020.
pub const HTTP_API_PER_MILLION_REQUESTS: f64 = 1.00;
/// Lambda Function URL (the ChatKit endpoint): no charge of its own, the
/// invocation is billed as Lambda requests and duration. Stated by
/// third-party write-ups since the 2022-04-06 launch; the AWS pages read
/// here (the Lambda developer guide's function URL page) do not state a
/// price either way.
pub const FUNCTION_URL_PER_MILLION_REQUESTS: f64 = 0.0;
/// DynamoDB on demand, dollars per million read request units (standard
/// table class), after the 50% cut effective 2024-11-01 (announced
/// 2024-11-14; it was $0.25). <https://aws.amazon.com/dynamodb/pricing/on-demand/>
/// (units defined there; figures read through airbyte.com, 2025-07-21).
pub const DYNAMODB_PER_MILLION_READ_UNITS: f64 = 0.125;
/// DynamoDB on demand, dollars per million write request units (was $1.25
/// before 2024-11-01; same sources).
pub const DYNAMODB_PER_MILLION_WRITE_UNITS: f64 = 0.625;
/// Secrets Manager, dollars per 10,000 API calls
/// (<https://aws.amazon.com/secrets-manager/pricing/>, read through
/// third-party copies; unchanged since the 2018 launch).
pub const SECRETS_MANAGER_PER_10K_CALLS: f64 = 0.05;
/// S3 Standard, dollars per 1,000 PUT, COPY, POST or LIST requests
/// (<https://aws.amazon.com/s3/pricing/>, read through c3x.dev).
pub const S3_PER_1K_PUT_COPY_POST_LIST: f64 = 0.005;
/// S3 Standard, dollars per 1,000 GET, SELECT and all other requests (HEAD
/// included); DELETE is free (same sources).
pub const S3_PER_1K_GET_AND_OTHER: f64 = 0.0004;

/// A model's prices, dollars per million tokens (standard tier).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrices {
    /// The model's API name.
    pub model: &'static str,
    /// Input tokens not served from the prompt cache.
    pub input: f64,
    /// Input tokens served from the prompt cache.
    pub cached_input: f64,
    /// Output tokens.
    pub output: f64,
}

/// `gpt-4.1`, the template's default `ChatKitModel`: $2.00 / $0.50 / $8.00
/// since its launch on 2025-04-14 (<https://openai.com/index/gpt-4-1/>,
/// <https://platform.openai.com/docs/pricing>). Input and output confirmed
/// through third-party copies (deploybase.ai, losclouds.com, 2026); the
/// cached rate (a 75% discount, announced with GPT-4.1) was not found on a
/// page read here.
pub const GPT_4_1: ModelPrices = ModelPrices {
    model: "gpt-4.1",
    input: 2.00,
    cached_input: 0.50,
    output: 8.00,
};

/// `gpt-4.1-mini`: $0.40 / $0.10 / $1.60 since 2025-04-14 (same OpenAI
/// pages; all three confirmed through third-party copies: whichllm.io,
/// explore.oreate.ai, 2026).
pub const GPT_4_1_MINI: ModelPrices = ModelPrices {
    model: "gpt-4.1-mini",
    input: 0.40,
    cached_input: 0.10,
    output: 1.60,
};

/// S3 requests by price class (DELETE requests are free: not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct S3Requests {
    /// PUT, COPY, POST and LIST requests.
    pub put_copy_post_list: f64,
    /// GET, HEAD, SELECT and the other requests.
    pub get_and_other: f64,
}

/// How a request reaches its function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Front {
    /// API Gateway's HTTP API (the REST routes).
    #[default]
    HttpApi,
    /// A Lambda Function URL (the ChatKit endpoint).
    FunctionUrl,
}

impl Front {
    /// Its price, dollars per million requests.
    pub fn per_million_requests(self) -> f64 {
        match self {
            Front::HttpApi => HTTP_API_PER_MILLION_REQUESTS,
            Front::FunctionUrl => FUNCTION_URL_PER_MILLION_REQUESTS,
        }
    }
}

/// Model tokens as the Responses API's `usage` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tokens {
    /// `input_tokens`: every input token, cached ones included.
    pub input: f64,
    /// `input_tokens_details.cached_tokens`: of `input`, those served from
    /// the prompt cache.
    pub cached_input: f64,
    /// `output_tokens`.
    pub output: f64,
}

/// What one request (a REST call, or a chat turn) uses; every count is per
/// request, and may be a mean (1.5 read units).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Workload {
    /// The function's memory (the template's `MemorySize`), in MB.
    pub memory_mb: u32,
    /// Lambda invocations.
    pub invocations: f64,
    /// Billed milliseconds per invocation: each invocation's duration
    /// rounded up to the next millisecond ([`billed_ms`], averaged).
    pub billed_ms: f64,
    /// How the requests reach the function.
    pub front: Front,
    /// Requests through `front` (the HTTP API meters each 512 KB of a
    /// request or answer as one).
    pub front_requests: f64,
    /// DynamoDB read request units.
    pub read_units: f64,
    /// DynamoDB write request units.
    pub write_units: f64,
    /// Secrets Manager API calls.
    pub secrets_calls: f64,
    /// S3 requests.
    pub s3: S3Requests,
    /// Model tokens, all the turn's model requests together.
    pub tokens: Tokens,
}

/// Dollars, by component.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// Lambda requests.
    pub lambda_requests: f64,
    /// Lambda duration (GB-seconds).
    pub lambda_duration: f64,
    /// The front's requests: API Gateway's HTTP API (a Function URL is free).
    pub gateway: f64,
    /// DynamoDB read request units.
    pub dynamodb_reads: f64,
    /// DynamoDB write request units.
    pub dynamodb_writes: f64,
    /// Secrets Manager API calls.
    pub secrets_manager: f64,
    /// S3 PUT, COPY, POST and LIST requests.
    pub s3_put_class: f64,
    /// S3 GET and other requests.
    pub s3_get_class: f64,
    /// Uncached input tokens.
    pub model_input: f64,
    /// Cached input tokens.
    pub model_cached_input: f64,
    /// Output tokens.
    pub model_output: f64,
}

impl Cost {
    /// Every component with its name, in a fixed order.
    pub fn components(&self) -> [(&'static str, f64); 11] {
        [
            ("Lambda requests", self.lambda_requests),
            ("Lambda duration", self.lambda_duration),
            ("API Gateway", self.gateway),
            ("DynamoDB reads", self.dynamodb_reads),
            ("DynamoDB writes", self.dynamodb_writes),
            ("Secrets Manager", self.secrets_manager),
            ("S3 PUT/COPY/POST/LIST", self.s3_put_class),
            ("S3 GET/other", self.s3_get_class),
            ("model input", self.model_input),
            ("model cached input", self.model_cached_input),
            ("model output", self.model_output),
        ]
    }

    /// The sum of the components.
    pub fn total(&self) -> f64 {
        self.components().iter().map(|(_, dollars)| dollars).sum()
    }

    /// Every component multiplied by `n` (the cost of `n` requests).
    pub fn times(&self, n: f64) -> Cost {
        Cost {
            lambda_requests: self.lambda_requests * n,
            lambda_duration: self.lambda_duration * n,
            gateway: self.gateway * n,
            dynamodb_reads: self.dynamodb_reads * n,
            dynamodb_writes: self.dynamodb_writes * n,
            secrets_manager: self.secrets_manager * n,
            s3_put_class: self.s3_put_class * n,
            s3_get_class: self.s3_get_class * n,
            model_input: self.model_input * n,
            model_cached_input: self.model_cached_input * n,
            model_output: self.model_output * n,
        }
    }
}

/// A duration as Lambda bills it: rounded up to the next millisecond.
pub fn billed_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// What one request of `workload` costs, its tokens at `model`'s prices.
/// Cached input tokens are priced at the cached rate only; input tokens
/// beyond them at the input rate (a cached count above the input count is
/// taken as all of it).
pub fn per_request(workload: &Workload, model: &ModelPrices) -> Cost {
    let w = workload;
    let gb_seconds = f64::from(w.memory_mb) / 1024.0 * (w.billed_ms / 1000.0);
    let cached = w.tokens.cached_input.min(w.tokens.input);
    Cost {
        lambda_requests: w.invocations * LAMBDA_PER_MILLION_REQUESTS / 1e6,
        lambda_duration: w.invocations * gb_seconds * LAMBDA_ARM_PER_GB_SECOND,
        gateway: w.front.per_million_requests() * w.front_requests / 1e6,
        dynamodb_reads: w.read_units * DYNAMODB_PER_MILLION_READ_UNITS / 1e6,
        dynamodb_writes: w.write_units * DYNAMODB_PER_MILLION_WRITE_UNITS / 1e6,
        secrets_manager: w.secrets_calls * SECRETS_MANAGER_PER_10K_CALLS / 1e4,
        s3_put_class: w.s3.put_copy_post_list * S3_PER_1K_PUT_COPY_POST_LIST / 1e3,
        s3_get_class: w.s3.get_and_other * S3_PER_1K_GET_AND_OTHER / 1e3,
        model_input: (w.tokens.input - cached) * model.input / 1e6,
        model_cached_input: cached * model.cached_input / 1e6,
        model_output: w.tokens.output * model.output / 1e6,
    }
}

/// Dollars per million requests of a REST workload.
pub fn per_million_requests(workload: &Workload, model: &ModelPrices) -> Cost {
    per_request(workload, model).times(1e6)
}

/// Dollars per 1,000 turns of a chat workload.
pub fn per_thousand_turns(workload: &Workload, model: &ModelPrices) -> Cost {
    per_request(workload, model).times(1e3)
}

/// A markdown table of `rows` (a label and its cost): the total, then the
/// components any row has, in dollars to four decimals (`—` for zero).
pub fn breakdown(rows: &[(&str, Cost)]) -> String {
    let names: Vec<(usize, &str)> = Cost::default()
        .components()
        .iter()
        .enumerate()
        .filter(|(i, _)| rows.iter().any(|(_, c)| c.components()[*i].1 != 0.0))
        .map(|(i, (name, _))| (i, *name))
        .collect();
    let mut out = String::from("| request | total |");
    for (_, name) in &names {
        write!(out, " {name} |").unwrap_or_default();
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(names.len()));
    out.push('\n');
    for (label, cost) in rows {
        write!(out, "| {label} | {} |", dollars(cost.total())).unwrap_or_default();
        let components = cost.components();
        for (i, _) in &names {
            write!(out, " {} |", dollars(components[*i].1)).unwrap_or_default();
        }
        out.push('\n');
    }
    out
}

/// `$0.1875`, or `—` for zero.
fn dollars(amount: f64) -> String {
    if amount == 0.0 {
        "—".into()
    } else {
        format!("${amount:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workload that uses nothing.
    fn nothing() -> Workload {
        Workload::default()
    }

    /// Equal but for float rounding (relative: amounts a request are ~1e-8).
    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= (1e-12 * expected.abs()).max(1e-20),
            "{actual} != {expected}"
        );
    }

    /// The one nonzero component of `cost`, checked: `name` at `expected`,
    /// and the total equal to it.
    fn only(cost: &Cost, name: &str, expected: f64) {
        for (component, dollars) in cost.components() {
            if component == name {
                close(dollars, expected);
            } else {
                assert_eq!(dollars, 0.0, "{component} in {cost:?}");
            }
        }
        close(cost.total(), expected);
    }

    #[test]
    fn lambda_bills_each_started_millisecond() {
        assert_eq!(billed_ms(Duration::ZERO), 0);
        assert_eq!(billed_ms(Duration::from_nanos(1)), 1);
        assert_eq!(billed_ms(Duration::from_millis(3)), 3);
        assert_eq!(billed_ms(Duration::from_nanos(3_000_001)), 4);
        assert_eq!(billed_ms(Duration::from_micros(2_999)), 3);
    }

    #[test]
    fn lambda_requests_cost_20_cents_a_million_invocations() {
        let one = Workload {
            invocations: 1.0,
            ..nothing()
        };
        only(
            &per_million_requests(&one, &GPT_4_1),
            "Lambda requests",
            0.20,
        );
        let two = Workload {
            invocations: 2.0,
            ..nothing()
        };
        only(
            &per_million_requests(&two, &GPT_4_1),
            "Lambda requests",
            0.40,
        );
    }

    #[test]
    fn lambda_duration_is_memory_times_billed_time() {
        // 512 MB for 10 ms: 0.5 GB × 0.01 s = 0.005 GB-s a call.
        let rest = Workload {
            memory_mb: 512,
            billed_ms: 10.0,
            invocations: 1.0,
            ..nothing()
        };
        let cost = per_request(&rest, &GPT_4_1);
        close(cost.lambda_duration, 0.005 * 0.000_013_333_4);
        close(cost.lambda_requests, 0.20e-6);
        close(
            per_million_requests(&rest, &GPT_4_1).lambda_duration,
            0.066_667,
        );
        // No invocation, no duration.
        let idle = Workload {
            invocations: 0.0,
            ..rest
        };
        assert_eq!(per_request(&idle, &GPT_4_1), Cost::default());
        // 1024 MB for 1 ms, twice: 2 × 1 GB × 0.001 s.
        let twice = Workload {
            memory_mb: 1024,
            billed_ms: 1.0,
            invocations: 2.0,
            ..nothing()
        };
        let cost = per_million_requests(&twice, &GPT_4_1);
        close(cost.lambda_duration, 0.002 * 0.000_013_333_4 * 1e6);
        close(cost.lambda_requests, 0.40);
        close(cost.total(), 0.026_666_8 + 0.40);
    }

    #[test]
    fn an_http_api_request_costs_a_dollar_a_million_and_a_function_url_nothing() {
        assert_eq!(Front::default(), Front::HttpApi);
        assert_eq!(Front::HttpApi.per_million_requests(), 1.00);
        assert_eq!(Front::FunctionUrl.per_million_requests(), 0.0);
        let behind_gateway = Workload {
            front: Front::HttpApi,
            front_requests: 1.0,
            ..nothing()
        };
        only(
            &per_million_requests(&behind_gateway, &GPT_4_1),
            "API Gateway",
            1.00,
        );
        // A large answer is metered as several requests.
        let twice = Workload {
            front_requests: 2.0,
            ..behind_gateway
        };
        only(&per_million_requests(&twice, &GPT_4_1), "API Gateway", 2.00);
        let behind_url = Workload {
            front: Front::FunctionUrl,
            front_requests: 3.0,
            ..nothing()
        };
        assert_eq!(per_million_requests(&behind_url, &GPT_4_1), Cost::default());
    }

    #[test]
    fn dynamodb_units_are_priced_per_million_read_and_write_units() {
        let reads = Workload {
            read_units: 1.5,
            ..nothing()
        };
        only(
            &per_million_requests(&reads, &GPT_4_1),
            "DynamoDB reads",
            0.1875,
        );
        let writes = Workload {
            write_units: 2.0,
            ..nothing()
        };
        only(
            &per_million_requests(&writes, &GPT_4_1),
            "DynamoDB writes",
            1.25,
        );
    }

    #[test]
    fn secrets_manager_calls_cost_5_cents_per_10_000() {
        let fetching = Workload {
            secrets_calls: 1.0,
            ..nothing()
        };
        only(
            &per_million_requests(&fetching, &GPT_4_1),
            "Secrets Manager",
            5.00,
        );
    }

    #[test]
    fn s3_requests_are_priced_by_class() {
        let put = Workload {
            s3: S3Requests {
                put_copy_post_list: 1.0,
                ..S3Requests::default()
            },
            ..nothing()
        };
        only(
            &per_million_requests(&put, &GPT_4_1),
            "S3 PUT/COPY/POST/LIST",
            5.00,
        );
        let get = Workload {
            s3: S3Requests {
                get_and_other: 2.0,
                ..S3Requests::default()
            },
            ..nothing()
        };
        only(&per_million_requests(&get, &GPT_4_1), "S3 GET/other", 0.80);
    }

    #[test]
    fn cached_tokens_are_priced_at_the_cached_rate_and_not_also_as_input() {
        let turn = Workload {
            tokens: Tokens {
                input: 2_000.0,
                cached_input: 1_500.0,
                output: 100.0,
            },
            ..nothing()
        };
        let cost = per_thousand_turns(&turn, &GPT_4_1);
        // 500 uncached × $2, 1,500 cached × $0.50, 100 out × $8, per million, × 1,000 turns.
        close(cost.model_input, 1.00);
        close(cost.model_cached_input, 0.75);
        close(cost.model_output, 0.80);
        close(cost.total(), 2.55);
        let mini = per_thousand_turns(&turn, &GPT_4_1_MINI);
        close(mini.model_input, 0.20);
        close(mini.model_cached_input, 0.15);
        close(mini.model_output, 0.16);
        // More cached than input (not a real usage): all of the input, cached.
        let odd = Workload {
            tokens: Tokens {
                input: 100.0,
                cached_input: 300.0,
                output: 0.0,
            },
            ..nothing()
        };
        only(
            &per_thousand_turns(&odd, &GPT_4_1),
            "model cached input",
            0.05,
        );
    }

    #[test]
    fn the_prices_are_the_published_ones() {
        assert_eq!(LAMBDA_ARM_PER_GB_SECOND, 0.000_013_333_4);
        assert_eq!(LAMBDA_PER_MILLION_REQUESTS, 0.20);
        assert_eq!(HTTP_API_PER_MILLION_REQUESTS, 1.00);
        assert_eq!(FUNCTION_URL_PER_MILLION_REQUESTS, 0.0);
        assert_eq!(DYNAMODB_PER_MILLION_READ_UNITS, 0.125);
        assert_eq!(DYNAMODB_PER_MILLION_WRITE_UNITS, 0.625);
        assert_eq!(SECRETS_MANAGER_PER_10K_CALLS, 0.05);
        assert_eq!(S3_PER_1K_PUT_COPY_POST_LIST, 0.005);
        assert_eq!(S3_PER_1K_GET_AND_OTHER, 0.0004);
        assert_eq!(
            (GPT_4_1.input, GPT_4_1.cached_input, GPT_4_1.output),
            (2.00, 0.50, 8.00)
        );
        assert_eq!(
            (
                GPT_4_1_MINI.input,
                GPT_4_1_MINI.cached_input,
                GPT_4_1_MINI.output
            ),
            (0.40, 0.10, 1.60)
        );
        assert_eq!(GPT_4_1.model, "gpt-4.1");
        assert_eq!(GPT_4_1_MINI.model, "gpt-4.1-mini");
    }

    #[test]
    fn a_cost_scales_every_component_and_sums_them() {
        let everything = Workload {
            memory_mb: 1024,
            invocations: 1.0,
            billed_ms: 1000.0,
            front: Front::HttpApi,
            front_requests: 1.0,
            read_units: 1.0,
            write_units: 1.0,
            secrets_calls: 1.0,
            s3: S3Requests {
                put_copy_post_list: 1.0,
                get_and_other: 1.0,
            },
            tokens: Tokens {
                input: 3.0,
                cached_input: 1.0,
                output: 1.0,
            },
        };
        let one = per_request(&everything, &GPT_4_1);
        let expected = [
            ("Lambda requests", 0.20e-6),
            ("Lambda duration", 0.000_013_333_4),
            ("API Gateway", 1e-6),
            ("DynamoDB reads", 0.125e-6),
            ("DynamoDB writes", 0.625e-6),
            ("Secrets Manager", 5e-6),
            ("S3 PUT/COPY/POST/LIST", 5e-6),
            ("S3 GET/other", 0.4e-6),
            ("model input", 4e-6),
            ("model cached input", 0.5e-6),
            ("model output", 8e-6),
        ];
        for ((name, dollars), (want, amount)) in one.components().iter().zip(expected) {
            assert_eq!(*name, want);
            close(*dollars, amount);
        }
        let sum: f64 = expected.iter().map(|(_, d)| d).sum();
        close(one.total(), sum);
        let thousand = one.times(1e3);
        for ((_, scaled), (_, single)) in thousand.components().iter().zip(one.components()) {
            close(*scaled, single * 1e3);
        }
        close(per_thousand_turns(&everything, &GPT_4_1).total(), sum * 1e3);
        close(
            per_million_requests(&everything, &GPT_4_1).total(),
            sum * 1e6,
        );
    }

    #[test]
    fn the_breakdown_lists_the_components_any_row_has() {
        let get = Workload {
            invocations: 1.0,
            front_requests: 1.0,
            read_units: 1.0,
            ..nothing()
        };
        let put = Workload {
            write_units: 2.0,
            ..get
        };
        let table = breakdown(&[
            ("GET", per_million_requests(&get, &GPT_4_1)),
            ("PUT", per_million_requests(&put, &GPT_4_1)),
        ]);
        assert_eq!(
            table,
            "| request | total | Lambda requests | API Gateway | DynamoDB reads | DynamoDB writes |\n\
             |---|---|---|---|---|---|\n\
             | GET | $1.3250 | $0.2000 | $1.0000 | $0.1250 | — |\n\
             | PUT | $2.5750 | $0.2000 | $1.0000 | $0.1250 | $1.2500 |\n"
        );
        assert_eq!(breakdown(&[]), "| request | total |\n|---|---|\n");
    }
}
