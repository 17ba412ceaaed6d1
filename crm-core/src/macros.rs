//! Small macros shared by the crate.

/// A closed set of names stored and serialised as strings: `as_str`, `FromStr` with an
/// error that lists the choices, `Display`, and serde as the plain string. The
/// visibility given (`pub`, `pub(crate)`) is the enum's and its methods'.
macro_rules! string_enum {
    ($(#[$meta:meta])* $vis:vis $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in order.
            // A crate-private set may have no use for the list.
            #[allow(dead_code)]
            $vis const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and serialised name.
            $vis fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }
        }

        #[cfg(feature = "openapi")]
        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                ::utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(::utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($s),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl ::utoipa::ToSchema for $name {}

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, "; expected one of: {}"),
                        [$($s),+].join(", ")
                    )),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_enum;

/// The OpenAPI schema of a type serialised as a plain string (`format` as OpenAPI
/// names it, or `None`).
#[cfg(feature = "openapi")]
macro_rules! string_schema {
    ($name:ty, $format:expr, $description:literal) => {
        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                let format: Option<&str> = $format;
                ::utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(::utoipa::openapi::schema::Type::String)
                    .format(
                        format
                            .map(|f| ::utoipa::openapi::schema::SchemaFormat::Custom(f.to_owned())),
                    )
                    .description(Some($description))
                    .into()
            }
        }

        impl ::utoipa::ToSchema for $name {}
    };
}
#[cfg(feature = "openapi")]
pub(crate) use string_schema;
