//! Where the tenant registry (tenants, checkpoints, consent attempts, sign-ins) lives.

use std::path::PathBuf;

use super::env::{ConfigError, Env};

pub const ENV_TABLE_NAME: &str = "DP_TABLE_NAME";
pub const ENV_SQLITE_PATH: &str = "DP_SQLITE_PATH";

pub const DEFAULT_SQLITE_PATH: &str = ".local/defender-partner.sqlite";

/// Where the tenant registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    DynamoDb { table: String },
    Sqlite { path: PathBuf },
}

impl StoreLocation {
    /// Whether opening the registry needs the AWS configuration.
    pub fn needs_aws(&self) -> bool {
        matches!(self, StoreLocation::DynamoDb { .. })
    }
}

/// A table gives DynamoDB; otherwise the SQLite file, which Lambda needs named on purpose.
pub(super) fn location(env: &Env) -> Result<StoreLocation, ConfigError> {
    match env.get(ENV_TABLE_NAME) {
        Some(table) => Ok(StoreLocation::DynamoDb { table }),
        // Lambda's file system is read-only and per instance: an implicit SQLite file there
        // would be a registry nobody else sees.
        None if env.in_lambda() && !env.is_set(ENV_SQLITE_PATH) => Err(ConfigError::new(
            ENV_TABLE_NAME,
            format!(
                "is required in Lambda (set {ENV_SQLITE_PATH} to use an embedded registry on purpose)"
            ),
        )),
        None => Ok(StoreLocation::Sqlite {
            path: PathBuf::from(
                env.get(ENV_SQLITE_PATH)
                    .unwrap_or_else(|| DEFAULT_SQLITE_PATH.to_owned()),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::{ENV_LAMBDA_FUNCTION_NAME, with};
    use super::*;

    #[test]
    fn a_table_else_the_embedded_file() {
        assert_eq!(
            with(&[(ENV_TABLE_NAME, "registry")], |env| location(&env)).unwrap(),
            StoreLocation::DynamoDb {
                table: "registry".into()
            }
        );
        let embedded = with(&[], |env| location(&env)).unwrap();
        assert_eq!(
            embedded,
            StoreLocation::Sqlite {
                path: PathBuf::from(DEFAULT_SQLITE_PATH)
            }
        );
        assert!(!embedded.needs_aws());
    }

    #[test]
    fn lambda_needs_a_table_unless_sqlite_is_chosen() {
        let error = with(&[(ENV_LAMBDA_FUNCTION_NAME, "mint-token")], |env| {
            location(&env)
        })
        .unwrap_err();
        assert_eq!(error.variable, ENV_TABLE_NAME);
        let chosen = with(
            &[
                (ENV_LAMBDA_FUNCTION_NAME, "mint-token"),
                (ENV_SQLITE_PATH, "/tmp/registry.sqlite"),
            ],
            |env| location(&env),
        )
        .unwrap();
        assert!(matches!(chosen, StoreLocation::Sqlite { .. }));
    }
}
