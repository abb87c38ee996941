//! A PostgreSQL database of its own for one test run, created on the server at
//! `FIXMYPRINT_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! dropped afterwards.

use std::str::FromStr;

use sqlx::ConnectOptions as _;
use sqlx::postgres::PgConnectOptions;

/// The admin URL used to create and drop test databases.
#[must_use]
pub fn admin_url() -> String {
    std::env::var("FIXMYPRINT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for one test; call [`TempDatabase::drop_database`] when done.
#[derive(Debug)]
pub struct TempDatabase {
    name: String,
    url: String,
    admin: String,
}

impl TempDatabase {
    /// Creates `e2e_<random>` on the admin server.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn create() -> Result<Self, sqlx::Error> {
        let admin = admin_url();
        let name = diax_sdk::util::random_token("e2e_", 16).to_ascii_lowercase();
        let mut conn = PgConnectOptions::from_str(&admin)?.connect().await?;
        // The name is ours: lowercase letters, digits and '_' only.
        let sql = format!("CREATE DATABASE {name}");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        let url = PgConnectOptions::from_str(&admin)?
            .database(&name)
            .to_url_lossy()
            .to_string();
        Ok(Self { name, url, admin })
    }

    /// The connection URL of the new database.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database (closing any connection still open to it).
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn drop_database(self) -> Result<(), sqlx::Error> {
        let mut conn = PgConnectOptions::from_str(&self.admin)?.connect().await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}
