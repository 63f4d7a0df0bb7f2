//! A loosely typed serde deserializer over a parsed config tree.
//!
//! SPIRE decodes its HCL1 files weakly: `bind_port = "8081"` fills an integer, `"true"` fills a
//! boolean, a single value fills a list. This deserializer reproduces that on top of a
//! [`serde_json::Value`] tree and records the key path of every error (`server.bind_port`).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::{Map, Value};

/// A deserialization error with the key path where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeError {
    /// Key path segments from the root, outermost first.
    pub(crate) path: Vec<String>,
    pub(crate) reason: String,
}

impl DeError {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            reason: reason.into(),
        }
    }

    fn at(mut self, segment: &str) -> Self {
        self.path.insert(0, segment.to_owned());
        self
    }

    /// The dotted key path (`server.bind_port`), or an empty string at the root.
    pub(crate) fn dotted_path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            if !out.is_empty() && !segment.starts_with('[') {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.dotted_path(), self.reason)
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg.to_string())
    }
}

/// Deserializes `T` from `value` with SPIRE's loose typing.
pub(crate) fn from_value<T: de::DeserializeOwned>(value: &Value) -> Result<T, DeError> {
    T::deserialize(Loose(value))
}

/// Describes a value for error messages: `"abc"` for strings, the kind for others.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a block".to_owned(),
    }
}

fn expected(what: &str, value: &Value) -> DeError {
    DeError::new(format!("expected {what}, got {}", describe(value)))
}

/// Go's `strconv.ParseBool` spellings.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Loose<'a>(&'a Value);

impl Loose<'_> {
    fn signed(self) -> Result<i64, DeError> {
        match self.0 {
            Value::Number(n) => n.as_i64().ok_or_else(|| expected("an integer", self.0)),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| expected("an integer", self.0)),
            other => Err(expected("an integer", other)),
        }
    }

    fn unsigned(self) -> Result<u64, DeError> {
        match self.0 {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| expected("a non-negative integer", self.0)),
            Value::String(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| expected("a non-negative integer", self.0)),
            other => Err(expected("a non-negative integer", other)),
        }
    }

    fn float(self) -> Result<f64, DeError> {
        match self.0 {
            Value::Number(n) => n.as_f64().ok_or_else(|| expected("a number", self.0)),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| expected("a number", self.0)),
            other => Err(expected("a number", other)),
        }
    }
}

macro_rules! loose_int {
    ($($method:ident $ty:ty => $visit:ident via $get:ident;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                let n = self.$get()?;
                let n = <$ty>::try_from(n).map_err(|_| {
                    DeError::new(format!(
                        "value {} is out of range for {}",
                        describe(self.0),
                        stringify!($ty)
                    ))
                })?;
                visitor.$visit(n)
            }
        )*
    };
}

impl<'de, 'a> de::Deserializer<'de> for Loose<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_str(s),
            Value::Array(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
                index: 0,
            }),
            Value::Object(map) => visitor.visit_map(MapAccess::new(map)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::String(s) => match parse_bool(s.trim()) {
                Some(b) => visitor.visit_bool(b),
                None => Err(expected("a boolean", self.0)),
            },
            Value::Number(n) if n.as_u64() == Some(0) => visitor.visit_bool(false),
            Value::Number(n) if n.as_u64() == Some(1) => visitor.visit_bool(true),
            other => Err(expected("a boolean", other)),
        }
    }

    loose_int! {
        deserialize_i8 i8 => visit_i8 via signed;
        deserialize_i16 i16 => visit_i16 via signed;
        deserialize_i32 i32 => visit_i32 via signed;
        deserialize_i64 i64 => visit_i64 via signed;
        deserialize_u8 u8 => visit_u8 via unsigned;
        deserialize_u16 u16 => visit_u16 via unsigned;
        deserialize_u32 u32 => visit_u32 via unsigned;
        deserialize_u64 u64 => visit_u64 via unsigned;
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        #[allow(clippy::cast_possible_truncation)]
        visitor.visit_f32(self.float()? as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_f64(self.float()?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => visitor.visit_str(s),
            // HCL1 weak decoding turns scalars into strings.
            Value::Number(n) => visitor.visit_string(n.to_string()),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            other => Err(expected("a string", other)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Object(map) if map.is_empty() => visitor.visit_unit(),
            other => Err(expected("an empty block", other)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
                index: 0,
            }),
            Value::Null => visitor.visit_seq(SeqAccess {
                items: [].iter(),
                index: 0,
            }),
            // HCL1 weak decoding: a single value fills a one-element list.
            single => visitor.visit_seq(SeqAccess {
                items: std::slice::from_ref(single).iter(),
                index: 0,
            }),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(MapAccess::new(map)),
            Value::Null => visitor.visit_map(MapAccess::new(&EMPTY)),
            // HCL1 writes a repeated block as a list of blocks: merge a one-element list.
            Value::Array(items) if items.len() == 1 => Loose(&items[0]).deserialize_map(visitor),
            other => Err(expected("a block", other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Object(map) if map.len() == 1 => {
                let Some((variant, value)) = map.iter().next() else {
                    return Err(expected("a single-key block", self.0));
                };
                visitor.visit_enum(EnumAccess { variant, value })
            }
            other => Err(expected("a string", other)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Value>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Loose(item))
            .map(Some)
            .map_err(|e| e.at(&format!("[{index}]")))
    }
}

struct MapAccess<'a> {
    iter: serde_json::map::Iter<'a>,
    current: Option<(&'a String, &'a Value)>,
}

impl<'a> MapAccess<'a> {
    fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            iter: map.iter(),
            current: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.current = Some((key, value));
        seed.deserialize(key.as_str().into_deserializer())
            .map(Some)
            .map_err(|e: DeError| e.at(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.current.take() else {
            return Err(DeError::new("value requested before key"));
        };
        seed.deserialize(Loose(value)).map_err(|e| e.at(key))
    }
}

struct EnumAccess<'a> {
    variant: &'a String,
    value: &'a Value,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = DeError;
    type Variant = VariantAccess<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let variant = seed.deserialize(self.variant.as_str().into_deserializer())?;
        Ok((
            variant,
            VariantAccess {
                name: self.variant,
                value: self.value,
            },
        ))
    }
}

struct VariantAccess<'a> {
    name: &'a String,
    value: &'a Value,
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserializer::deserialize_unit(Loose(self.value), de::IgnoredAny)
            .map(|_| ())
            .map_err(|e| e.at(self.name))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(Loose(self.value))
            .map_err(|e| e.at(self.name))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(Loose(self.value), visitor).map_err(|e| e.at(self.name))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(Loose(self.value), visitor).map_err(|e| e.at(self.name))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: Option<u16>,
        on: Option<bool>,
        names: Option<Vec<String>>,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
    }

    fn outer(v: Value) -> Result<Outer, DeError> {
        from_value(&v)
    }

    #[test]
    fn strings_fill_integers_and_booleans() {
        let o = outer(json!({"inner": {"port": "8081", "on": "true", "names": "a", "name": 5}}))
            .unwrap();
        assert_eq!(
            o.inner,
            Inner {
                port: Some(8081),
                on: Some(true),
                names: Some(vec!["a".into()]),
                name: Some("5".into())
            }
        );
        let o = outer(json!({"inner": {"port": 8081, "on": false, "names": ["a", "b"]}})).unwrap();
        assert_eq!(o.inner.port, Some(8081));
        assert_eq!(o.inner.on, Some(false));
        assert_eq!(o.inner.names.unwrap().len(), 2);
    }

    #[test]
    fn errors_carry_the_key_path() {
        let e = outer(json!({"inner": {"port": "abc"}})).unwrap_err();
        assert_eq!(e.dotted_path(), "inner.port");
        assert_eq!(e.reason, "expected a non-negative integer, got \"abc\"");

        let e = outer(json!({"inner": {"port": 70000}})).unwrap_err();
        assert_eq!(e.reason, "value 70000 is out of range for u16");

        let e = outer(json!({"inner": {"on": "yes"}})).unwrap_err();
        assert_eq!(e.to_string(), "inner.on: expected a boolean, got \"yes\"");

        let e = outer(json!({"inner": {"names": [1, {"x": 1}]}})).unwrap_err();
        assert_eq!(e.dotted_path(), "inner.names[1]");

        let e = outer(json!({"inner": {"bogus": 1}})).unwrap_err();
        assert_eq!(e.dotted_path(), "inner.bogus");
        assert!(
            e.reason.starts_with("unknown field `bogus`"),
            "{}",
            e.reason
        );
    }
}
