//! `on:`: the events that trigger a workflow, their filters, and the inputs and outputs of
//! `workflow_dispatch` and `workflow_call`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::types::OrderedMap;

/// The triggers of a workflow, in file order. `on: push` and `on: [push, pull_request]` give
/// events without configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct On {
    pub events: OrderedMap<EventConfig>,
}

impl On {
    /// The event names in file order.
    pub fn events(&self) -> Vec<String> {
        self.events.keys().map(str::to_string).collect()
    }

    /// Whether the workflow is triggered by `event`.
    pub fn has(&self, event: &str) -> bool {
        self.events.contains_key(event)
    }

    /// The configuration of `event` as JSON: `null` when the event has none, the list of
    /// `{cron}` objects for `schedule`, else an object (filters given as one string come back
    /// as lists). `None` when the workflow is not triggered by `event`.
    pub fn config(&self, event: &str) -> Option<Value> {
        self.events.get(event).map(|c| match c {
            EventConfig::Empty => Value::Null,
            EventConfig::Filters(f) => serde_json::to_value(f).unwrap_or(Value::Null),
            EventConfig::WorkflowDispatch(w) => serde_json::to_value(w).unwrap_or(Value::Null),
            EventConfig::WorkflowCall(w) => serde_json::to_value(w).unwrap_or(Value::Null),
            EventConfig::Schedule(s) => serde_json::to_value(s).unwrap_or(Value::Null),
        })
    }

    /// The typed configuration of `event`.
    pub fn get(&self, event: &str) -> Option<&EventConfig> {
        self.events.get(event)
    }

    /// The filters of `event` (`branches`, `paths`, `types`, ...), when it has some.
    pub fn filters(&self, event: &str) -> Option<&EventFilters> {
        match self.events.get(event)? {
            EventConfig::Filters(f) => Some(f),
            _ => None,
        }
    }

    /// The `workflow_dispatch` configuration, when it has one.
    pub fn workflow_dispatch(&self) -> Option<&WorkflowDispatch> {
        match self.events.get("workflow_dispatch")? {
            EventConfig::WorkflowDispatch(w) => Some(w),
            _ => None,
        }
    }

    /// The `workflow_call` configuration, when it has one.
    pub fn workflow_call(&self) -> Option<&WorkflowCall> {
        match self.events.get("workflow_call")? {
            EventConfig::WorkflowCall(w) => Some(w),
            _ => None,
        }
    }

    /// The cron strings of `schedule`.
    pub fn schedules(&self) -> Vec<String> {
        match self.events.get("schedule") {
            Some(EventConfig::Schedule(s)) => s.iter().map(|s| s.cron.clone()).collect(),
            _ => Vec::new(),
        }
    }
}

/// The configuration of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventConfig {
    /// `push:` with nothing after it, or an event from the string or list forms.
    Empty,
    Filters(EventFilters),
    WorkflowDispatch(WorkflowDispatch),
    WorkflowCall(WorkflowCall),
    Schedule(Vec<Schedule>),
}

/// Activity types and branch/tag/path filters of an event.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<super::types::StringList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<super::types::StringList>,
    #[serde(
        default,
        rename = "branches-ignore",
        skip_serializing_if = "Option::is_none"
    )]
    pub branches_ignore: Option<super::types::StringList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<super::types::StringList>,
    #[serde(
        default,
        rename = "tags-ignore",
        skip_serializing_if = "Option::is_none"
    )]
    pub tags_ignore: Option<super::types::StringList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<super::types::StringList>,
    #[serde(
        default,
        rename = "paths-ignore",
        skip_serializing_if = "Option::is_none"
    )]
    pub paths_ignore: Option<super::types::StringList>,
    /// `workflow_run`: the workflows to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows: Option<super::types::StringList>,
}

/// One `schedule` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cron: String,
}

/// `on.workflow_dispatch`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDispatch {
    #[serde(default)]
    pub inputs: OrderedMap<Input>,
}

/// `on.workflow_call`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowCall {
    #[serde(default)]
    pub inputs: OrderedMap<Input>,
    #[serde(default)]
    pub outputs: OrderedMap<CallOutput>,
    /// Secret name → declaration (`null` entries become the default declaration).
    #[serde(default)]
    pub secrets: OrderedMap<Option<CallSecret>>,
}

/// An input of `workflow_dispatch` or `workflow_call`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The default as written (string, number or boolean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// `string`, `boolean`, `number`, `choice` or `environment`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub input_type: Option<String>,
    /// The choices of a `choice` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    #[serde(
        default,
        rename = "deprecationMessage",
        skip_serializing_if = "Option::is_none"
    )]
    pub deprecation_message: Option<String>,
}

/// An output of `workflow_call`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub value: String,
}

/// A secret declared by `workflow_call`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

impl<'de> Deserialize<'de> for On {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OV;
        impl<'de> Visitor<'de> for OV {
            type Value = On;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event name, a list of event names or a map of events")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<On, E> {
                let mut events = OrderedMap::new();
                events.insert(v, EventConfig::Empty);
                Ok(On { events })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<On, A::Error> {
                let mut events = OrderedMap::new();
                while let Some(name) = seq.next_element::<String>()? {
                    if events.contains_key(&name) {
                        return Err(de::Error::custom(format!("duplicate event `{name}`")));
                    }
                    events.insert(name, EventConfig::Empty);
                }
                Ok(On { events })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<On, A::Error> {
                let mut events = OrderedMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if events.contains_key(&name) {
                        return Err(de::Error::custom(format!("duplicate event `{name}`")));
                    }
                    let config = match name.as_str() {
                        "schedule" => EventConfig::Schedule(map.next_value::<Vec<Schedule>>()?),
                        "workflow_dispatch" => map
                            .next_value::<Option<WorkflowDispatch>>()?
                            .map_or(EventConfig::Empty, EventConfig::WorkflowDispatch),
                        "workflow_call" => map
                            .next_value::<Option<WorkflowCall>>()?
                            .map_or(EventConfig::Empty, EventConfig::WorkflowCall),
                        _ => map
                            .next_value::<Option<EventFilters>>()?
                            .map_or(EventConfig::Empty, EventConfig::Filters),
                    };
                    events.insert(name, config);
                }
                Ok(On { events })
            }
        }
        d.deserialize_any(OV)
    }
}
