//! What the local runtime needs from `template.yaml`: each function's
//! binary, timeout and memory, HTTP routes, MSK event sources and schedules.

use serde_yaml::Value;

/// Lambda gives a function CPU in proportion to its `MemorySize`: at this
/// many MB, one vCPU-second each second (AWS Lambda developer guide,
/// "Configuring Lambda function memory").
pub const LAMBDA_MB_PER_VCPU: u64 = 1_769;

/// The vCPUs' worth of CPU time a function of `memory_mb` gets each second.
pub fn vcpu_share(memory_mb: u64) -> f64 {
    memory_mb as f64 / LAMBDA_MB_PER_VCPU as f64
}

/// A function (`AWS::Serverless::Function`), with `Globals.Function` applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionDef {
    /// The name it is invoked by (see `InvokeNames`).
    pub name: String,
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary`.
    pub binary: String,
    /// `Timeout` (Lambda's default: 3 s).
    pub timeout_s: u64,
    /// `MemorySize` (Lambda's default: 128 MB).
    pub memory_mb: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    /// API Gateway path template, e.g. `/merchants/{id}/dashboard`.
    pub path: String,
    pub function: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MskSource {
    pub function: String,
    pub topics: Vec<String>,
    pub consumer_group_id: String,
    pub batch_size: usize,
    pub batching_window_s: u64,
    /// `TRIM_HORIZON` (earliest) or `LATEST`.
    pub starting_position: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub function: String,
    pub every_s: u64,
}

/// Which name the Invoke API knows a function by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvokeNames {
    /// The binary (`Metadata.BuildProperties.Binary`): the local Lambda host.
    #[default]
    Binary,
    /// The resource's logical id (`PayFunction`): `sam local start-lambda`.
    LogicalId,
}

impl InvokeNames {
    /// `PAYSTREAM_INVOKE_NAMES`: `binary` (default) or `logical-id`.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("PAYSTREAM_INVOKE_NAMES").as_deref() {
            Err(_) | Ok("binary") => Ok(Self::Binary),
            Ok("logical-id") => Ok(Self::LogicalId),
            Ok(other) => Err(format!("PAYSTREAM_INVOKE_NAMES must be binary or logical-id, not {other:?}")),
        }
    }
}

#[derive(Debug, Default)]
pub struct Template {
    pub functions: Vec<FunctionDef>,
    pub routes: Vec<Route>,
    pub msk_sources: Vec<MskSource>,
    pub schedules: Vec<Schedule>,
}

/// `rate(1 minute)`, `rate(5 minutes)`, `rate(30 seconds)`, `rate(2 hours)`.
pub fn parse_rate(expression: &str) -> Option<u64> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let unit_s = match unit.trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        _ => return None,
    };
    Some(n * unit_s)
}

impl Template {
    /// The template at `PAYSTREAM_TEMPLATE` (default `template.yaml`), with
    /// functions named as `PAYSTREAM_INVOKE_NAMES` says.
    pub fn from_env() -> Result<Self, String> {
        let path = std::env::var("PAYSTREAM_TEMPLATE").unwrap_or_else(|_| "template.yaml".into());
        Self::load(std::path::Path::new(&path), InvokeNames::from_env()?)
    }

    pub fn load(path: &std::path::Path, names: InvokeNames) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, names)
    }

    pub fn parse(text: &str, names: InvokeNames) -> Result<Self, String> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("template.yaml: {e}"))?;
        let resources = doc.get("Resources").and_then(Value::as_mapping).ok_or("template.yaml has no Resources")?;
        let mut template = Template::default();
        let globals = doc.get("Globals").and_then(|g| g.get("Function"));
        for (logical_id, resource) in resources {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let logical_id = logical_id.as_str().unwrap_or_default();
            let binary = resource
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{logical_id}: Metadata.BuildProperties.Binary names the function's binary"))?;
            let function = match names {
                InvokeNames::Binary => binary.to_owned(),
                InvokeNames::LogicalId => logical_id.to_owned(),
            };
            let setting = |key: &str| {
                let own = resource.get("Properties").and_then(|p| p.get(key));
                own.or_else(|| globals.and_then(|g| g.get(key))).and_then(Value::as_u64)
            };
            template.functions.push(FunctionDef {
                name: function.clone(),
                logical_id: logical_id.to_owned(),
                binary: binary.to_owned(),
                timeout_s: setting("Timeout").unwrap_or(3),
                memory_mb: setting("MemorySize").unwrap_or(128),
            });
            let Some(events) = resource.get("Properties").and_then(|p| p.get("Events")).and_then(Value::as_mapping) else { continue };
            for (name, event) in events {
                let props = event.get("Properties").cloned().unwrap_or(Value::Null);
                let text = |key: &str| props.get(key).and_then(Value::as_str).map(str::to_owned);
                let number = |key: &str| props.get(key).and_then(Value::as_u64);
                let what = format!("{logical_id}.{}", name.as_str().unwrap_or_default());
                match event.get("Type").and_then(Value::as_str) {
                    Some("HttpApi") => template.routes.push(Route {
                        method: text("Method").ok_or_else(|| format!("{what}: Method"))?.to_ascii_uppercase(),
                        path: text("Path").ok_or_else(|| format!("{what}: Path"))?,
                        function: function.clone(),
                    }),
                    Some("MSK") => template.msk_sources.push(MskSource {
                        function: function.clone(),
                        topics: props
                            .get("Topics")
                            .and_then(Value::as_sequence)
                            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                            .ok_or_else(|| format!("{what}: Topics"))?,
                        consumer_group_id: text("ConsumerGroupId").ok_or_else(|| format!("{what}: ConsumerGroupId"))?,
                        batch_size: number("BatchSize").unwrap_or(100) as usize,
                        batching_window_s: number("MaximumBatchingWindowInSeconds").unwrap_or(0),
                        starting_position: text("StartingPosition").unwrap_or_else(|| "LATEST".into()),
                    }),
                    Some("Schedule" | "ScheduleV2") => {
                        let expression = text("Schedule").or_else(|| text("ScheduleExpression")).ok_or_else(|| format!("{what}: Schedule"))?;
                        let every_s = parse_rate(&expression).ok_or_else(|| format!("{what}: only rate(...) schedules run locally"))?;
                        template.schedules.push(Schedule { function: function.clone(), every_s });
                    }
                    _ => {}
                }
            }
        }
        Ok(template)
    }

    /// The route for a request, and the path parameters it binds.
    pub fn route(&self, method: &str, path: &str) -> RouteMatch<'_> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut allowed: Vec<String> = Vec::new();
        for route in &self.routes {
            let Some(params) = bind(&route.path, &segments) else { continue };
            if route.method == method || route.method == "ANY" {
                return RouteMatch::Found(route, params);
            }
            if !allowed.contains(&route.method) {
                allowed.push(route.method.clone());
            }
        }
        if allowed.is_empty() { RouteMatch::NotFound } else { RouteMatch::WrongMethod(allowed) }
    }
}

pub enum RouteMatch<'t> {
    Found(&'t Route, Vec<(String, String)>),
    /// The path exists with other methods: these, for the `Allow` header of
    /// the 405 (RFC 9110 requires it).
    WrongMethod(Vec<String>),
    NotFound,
}

fn bind(template: &str, segments: &[&str]) -> Option<Vec<(String, String)>> {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => params.push((name.to_owned(), (*segment).to_owned())),
            None if part == segment => {}
            None => return None,
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");

    #[test]
    fn the_real_template_yields_routes_sources_and_schedules() {
        let t = Template::load(std::path::Path::new(TEMPLATE), InvokeNames::Binary).unwrap();
        assert!(t.routes.iter().any(|r| r.method == "POST" && r.path == "/payments" && r.function == "pay"));
        assert!(t.routes.iter().any(|r| r.path == "/verify/{token}" && r.function == "verify"));
        let groups: Vec<&str> = t.msk_sources.iter().map(|s| s.consumer_group_id.as_str()).collect();
        for g in ["paystream-fds", "paystream-loyalty", "paystream-benefit", "paystream-settle"] {
            assert!(groups.contains(&g), "{g} in {groups:?}");
        }
        let mut unique = groups.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), groups.len(), "every event source has its own group");
        let fds = t.msk_sources.iter().find(|s| s.function == "fds-consumer").unwrap();
        assert_eq!((fds.topics.clone(), fds.batch_size, fds.starting_position.as_str()), (vec!["payment-stream".to_owned()], 1000, "TRIM_HORIZON"));
        assert!(t.schedules.iter().any(|s| s.function == "verify" && s.every_s == 60));
    }

    #[test]
    fn every_function_with_its_binary_timeout_and_memory() {
        let t = Template::load(std::path::Path::new(TEMPLATE), InvokeNames::Binary).unwrap();
        let mut names: Vec<&str> = t.functions.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["account", "benefit-consumer", "fds-consumer", "loyalty-consumer", "order", "pay", "report", "settle", "verify"]);
        let pay = t.functions.iter().find(|f| f.name == "pay").unwrap();
        assert_eq!((pay.logical_id.as_str(), pay.binary.as_str(), pay.timeout_s, pay.memory_mb), ("PayFunction", "pay", 10, 256), "Globals apply");
        let fds = t.functions.iter().find(|f| f.name == "fds-consumer").unwrap();
        assert_eq!(fds.timeout_s, 60, "a function's own Timeout wins over Globals");
        // A consumer's batch is CPU work: at 256 MB its measured CPU per
        // record caps a partition below the consumer's target.
        for source in &t.msk_sources {
            let f = t.functions.iter().find(|f| f.name == source.function).unwrap();
            assert!(vcpu_share(f.memory_mb) >= 1.0, "{} has {} MB: less than one vCPU", f.name, f.memory_mb);
        }
        assert!(vcpu_share(pay.memory_mb) < 0.2, "Globals' 256 MB for the HTTP functions");
        let by_id = Template::load(std::path::Path::new(TEMPLATE), InvokeNames::LogicalId).unwrap();
        assert!(by_id.functions.iter().any(|f| f.name == "PayFunction" && f.binary == "pay"));
    }

    #[test]
    fn routes_bind_parameters_and_tell_404_from_405() {
        let t = Template::load(std::path::Path::new(TEMPLATE), InvokeNames::Binary).unwrap();
        match t.route("GET", "/merchants/abc/dashboard") {
            RouteMatch::Found(r, params) => {
                assert_eq!(r.function, "report");
                assert_eq!(params, vec![("id".to_owned(), "abc".to_owned())]);
            }
            _ => panic!("dashboard route"),
        }
        assert!(matches!(t.route("GET", "/merchants/abc"), RouteMatch::Found(r, _) if r.function == "account"));
        assert!(matches!(t.route("DELETE", "/payments"), RouteMatch::WrongMethod(allowed) if allowed == ["POST"]));
        assert!(matches!(t.route("PUT", "/cards"), RouteMatch::WrongMethod(allowed) if allowed.len() == 2));
        assert!(matches!(t.route("GET", "/nowhere"), RouteMatch::NotFound));
    }

    /// The OpenAPI document and the template describe the same routes,
    /// served by the same functions.
    #[test]
    fn every_template_route_is_documented_and_every_documented_route_deployed() {
        let t = Template::load(std::path::Path::new(TEMPLATE), InvokeNames::Binary).unwrap();
        let mut deployed: Vec<(String, String, String)> = t.routes.iter().map(|r| (r.method.clone(), r.path.clone(), r.function.clone())).collect();
        let mut documented: Vec<(String, String, String)> =
            paystream::openapi::OPERATIONS.iter().map(|o| (o.method.to_owned(), o.path.to_owned(), o.function.to_owned())).collect();
        deployed.sort();
        documented.sort();
        assert_eq!(deployed, documented);
    }

    #[test]
    fn sam_local_knows_functions_by_logical_id() {
        let t = Template::load(std::path::Path::new(TEMPLATE), InvokeNames::LogicalId).unwrap();
        assert!(matches!(t.route("POST", "/payments"), RouteMatch::Found(r, _) if r.function == "PayFunction"));
        assert!(t.msk_sources.iter().any(|s| s.function == "FdsConsumerFunction" && s.consumer_group_id == "paystream-fds"));
        assert!(t.schedules.iter().any(|s| s.function == "VerifyFunction"));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("rate(1 minute)"), Some(60));
        assert_eq!(parse_rate("rate(5 minutes)"), Some(300));
        assert_eq!(parse_rate("rate(30 seconds)"), Some(30));
        assert_eq!(parse_rate("cron(0 12 * * ? *)"), None);
    }
}
