//! Rolling upgrades on PostgreSQL: for a while an older and a newer instance share one
//! schema. Migrations only add (tables, nullable columns, indexes), so an instance whose
//! build knows fewer migrations than the schema has keeps ending conversations, and both
//! read each other's records.

use std::process::Command;

use crate::helpers::*;

#[tokio::test]
async fn an_older_instance_keeps_working_on_a_schema_a_newer_one_migrated() {
    let (store, schema) = pg_store("wrapup_upgrade", 4);
    let config = config_for_store(&store, "", "");
    let first = TestApp::build().config(&config).spawn().await;
    let c1 = unique("upgrade");
    assert_eq!(first.end(&c1).await.0, 200);

    // What the next release's migration would do: add a table and a nullable column,
    // and record its version.
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let known: i32 =
        sqlx::query_scalar(&format!("SELECT max(version) FROM {schema}.wrapup_schema"))
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::raw_sql(&format!(
        "BEGIN;
         CREATE TABLE {schema}.future_notes (bot_id TEXT, conversation_id TEXT, note TEXT);
         ALTER TABLE {schema}.conversations ADD COLUMN future_flag BOOLEAN;
         INSERT INTO {schema}.wrapup_schema (version) VALUES ({});
         COMMIT;",
        known + 1
    ))
    .execute(&pool)
    .await
    .unwrap();

    // An instance of this (now older) build starts on it, and both end conversations.
    let second = TestApp::build().config(&config).spawn().await;
    let c2 = unique("upgrade");
    assert_eq!(second.end(&c2).await.0, 200);
    let c3 = unique("upgrade");
    assert_eq!(first.end(&c3).await.0, 200);
    for app in [&first, &second] {
        for c in [&c1, &c2, &c3] {
            let (status, record) = app.conversation(c).await;
            assert_eq!(
                (status.as_u16(), record["status"].as_str()),
                (200, Some("ended"))
            );
        }
    }
    // A duplicate end through the other instance is counted as one.
    assert_eq!(second.end(&c1).await.0, 200);
    let (_, record) = first.conversation(&c1).await;
    assert_eq!(record["duplicateEnds"], 1, "{record}");

    // `wrapup migrate` says where the schema is and what this build knows.
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config);
    let out = Command::new(env!("CARGO_BIN_EXE_wrapup"))
        .args(["migrate", "--config"])
        .arg(&path)
        .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("at version {}", known + 1))
            && said.contains(&format!("newest is {known}")),
        "{said}"
    );
    first.stop().await;
    second.stop().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}
