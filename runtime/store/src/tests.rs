//! Every test runs against SQLite and, when `VOXIDE_TEST_POSTGRES` names a server (scripts/
//! test.sh starts one), against a fresh Postgres database too. In CI the Postgres run is
//! required.

#![allow(clippy::unwrap_used)]

use super::*;

/// Fresh stores, one per backend available; the guard keeps the SQLite file alive.
async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("voxide.db").display());
    let mut out = vec![(Store::open(&url).await.unwrap(), Some(dir))];
    match std::env::var("VOXIDE_TEST_POSTGRES") {
        Ok(admin) => {
            let url = create_postgres_database(&admin, "voxide_store_test").await.unwrap();
            out.push((Store::open(&url).await.unwrap(), None));
        }
        Err(_) => assert!(
            std::env::var_os("CI").is_none(),
            "CI must test Postgres: set VOXIDE_TEST_POSTGRES (scripts/test.sh does)"
        ),
    }
    out
}

fn nf<T>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound(_)))
}

fn component(n: u8) -> NewVersion {
    let bytes = vec![n; 100 + usize::from(n)];
    NewVersion {
        digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        world: "voxide:flow/handler@0.1.0".into(),
        manifest: String::new(),
        bytes,
    }
}

#[tokio::test]
async fn first_start_makes_one_admin_key_and_keys_authenticate_by_hash_only() {
    for (store, _guard) in stores().await {
        let (tenant, key) = store.bootstrap().await.unwrap().expect("empty store bootstraps");
        assert_eq!(tenant.name, "default");
        assert!(store.bootstrap().await.unwrap().is_none(), "only once");
        assert_eq!(store.tenant_by_name("default").await.unwrap(), Some(tenant.clone()));
        assert_eq!(store.tenant_by_name("nobody").await.unwrap(), None);
        let who = store.authenticate(&key.secret).await.unwrap().unwrap();
        assert_eq!((who.tenant_id.as_str(), who.role), (tenant.id.as_str(), Role::Admin));
        // A wrong or malformed secret is nobody.
        assert_eq!(store.authenticate("vox_0000").await.unwrap(), None);
        assert_eq!(store.authenticate("Bearer x").await.unwrap(), None);
        // The secret itself is nowhere in the table.
        let rows =
            sqlx::query("SELECT prefix, hash FROM api_keys").fetch_all(&store.pool).await.unwrap();
        for row in rows {
            let (prefix, hash): (String, String) = (row.get("prefix"), row.get("hash"));
            assert!(!hash.contains(&key.secret) && key.secret.starts_with(&prefix));
            assert_ne!(prefix, key.secret);
        }
        let read = store.create_key(&tenant.id, "ci", Role::Read).await.unwrap();
        let who = store.authenticate(&read.secret).await.unwrap().unwrap();
        assert!(who.role.allows(Role::Read) && !who.role.allows(Role::Deploy));
        assert!(Role::Admin.allows(Role::Deploy));
    }
}

#[tokio::test]
async fn versions_are_numbered_immutable_and_deduplicated_per_flow() {
    for (store, _guard) in stores().await {
        let t = store.create_tenant("acme").await.unwrap();
        let (v1, created) = store.create_version(&t.id, "ivr", component(1)).await.unwrap();
        assert!(created);
        assert_eq!(v1.version, 1);
        let (again, created) = store.create_version(&t.id, "ivr", component(1)).await.unwrap();
        assert!(!created, "identical bytes return the existing version");
        assert_eq!(again, v1);
        let (v2, _) = store.create_version(&t.id, "ivr", component(2)).await.unwrap();
        assert_eq!(v2.version, 2);
        // The same bytes under another flow name are that flow's version 1.
        let (other, created) = store.create_version(&t.id, "menu", component(1)).await.unwrap();
        assert!(created && other.version == 1);
        assert_eq!(store.component(&v1.digest).await.unwrap(), component(1).bytes);
        let versions = store.list_versions(&t.id, "ivr").await.unwrap();
        assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
        let flows = store.list_flows(&t.id).await.unwrap();
        assert_eq!(
            flows.iter().map(|f| (f.name.as_str(), f.versions)).collect::<Vec<_>>(),
            [("ivr", 2), ("menu", 1)]
        );
        assert!(matches!(
            store.create_version(&t.id, "Bad Name", component(3)).await,
            Err(StoreError::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn another_tenants_objects_do_not_exist() {
    for (store, _guard) in stores().await {
        let a = store.create_tenant("a").await.unwrap();
        let b = store.create_tenant("b").await.unwrap();
        let (v, _) = store.create_version(&a.id, "ivr", component(1)).await.unwrap();
        store.set_alias(&a.id, "ivr", "live", 1).await.unwrap();
        let route = store
            .add_route(
                &a.id,
                NewRoute {
                    pattern: "+15550100".into(),
                    priority: 0,
                    targets: vec![RouteTarget {
                        flow: "ivr".into(),
                        alias: Some("live".into()),
                        version: None,
                        weight: 100,
                    }],
                    vars: BTreeMap::new(),
                },
            )
            .await
            .unwrap();
        assert!(nf(store.list_versions(&b.id, "ivr").await));
        assert!(nf(store.version(&b.id, "ivr", v.version).await));
        assert!(nf(store.aliases(&b.id, "ivr").await));
        assert!(nf(store.set_alias(&b.id, "ivr", "live", 1).await));
        assert!(nf(store.delete_version(&b.id, "ivr", 1).await));
        assert!(nf(store.delete_route(&b.id, &route.id).await));
        assert!(store.list_flows(&b.id).await.unwrap().is_empty());
        assert!(store.routes(&b.id).await.unwrap().is_empty());
        // B cannot route to A's flow either.
        let stolen = store
            .add_route(
                &b.id,
                NewRoute {
                    pattern: "+15550199".into(),
                    priority: 0,
                    targets: vec![RouteTarget {
                        flow: "ivr".into(),
                        alias: None,
                        version: Some(1),
                        weight: 100,
                    }],
                    vars: BTreeMap::new(),
                },
            )
            .await;
        assert!(nf(stolen));
        assert_eq!(store.routes(&a.id).await.unwrap(), vec![route]);
    }
}

#[tokio::test]
async fn aliases_move_atomically_and_versions_in_use_cannot_be_deleted() {
    for (store, _guard) in stores().await {
        let t = store.create_tenant("acme").await.unwrap();
        store.create_version(&t.id, "ivr", component(1)).await.unwrap();
        store.create_version(&t.id, "ivr", component(2)).await.unwrap();
        store.create_version(&t.id, "ivr", component(3)).await.unwrap();
        store.set_alias(&t.id, "ivr", "live", 1).await.unwrap();
        assert_eq!(store.resolve_alias(&t.id, "ivr", "live").await.unwrap(), 1);
        store.set_alias(&t.id, "ivr", "live", 2).await.unwrap();
        assert_eq!(store.resolve_alias(&t.id, "ivr", "live").await.unwrap(), 2);
        assert!(matches!(
            store.set_alias(&t.id, "ivr", "live", 9).await,
            Err(StoreError::NotFound(_))
        ));
        store
            .add_route(
                &t.id,
                NewRoute {
                    pattern: "+1555*".into(),
                    priority: 5,
                    targets: vec![
                        RouteTarget {
                            flow: "ivr".into(),
                            alias: Some("live".into()),
                            version: None,
                            weight: 90,
                        },
                        RouteTarget {
                            flow: "ivr".into(),
                            alias: None,
                            version: Some(3),
                            weight: 10,
                        },
                    ],
                    vars: BTreeMap::from([("company".into(), "Acme".into())]),
                },
            )
            .await
            .unwrap();
        // 2 is live (and routed through the alias), 3 is routed directly, 1 is free.
        for v in [2, 3] {
            let err = store.delete_version(&t.id, "ivr", v).await.unwrap_err();
            assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("+1555*")), "{err}");
        }
        store.delete_version(&t.id, "ivr", 1).await.unwrap();
        assert!(matches!(store.version(&t.id, "ivr", 1).await, Err(StoreError::NotFound(_))));
        // Routes keep their shape through the database.
        let routes = store.routing_snapshot().await.unwrap().routes;
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].targets[1].version, Some(3));
        assert_eq!(routes[0].vars["company"], "Acme");
    }
}

#[tokio::test]
async fn bad_routes_are_refused_with_the_reason() {
    for (store, _guard) in stores().await {
        let t = store.create_tenant("acme").await.unwrap();
        store.create_version(&t.id, "ivr", component(1)).await.unwrap();
        let route = |pattern: &str, targets: Vec<RouteTarget>| NewRoute {
            pattern: pattern.into(),
            priority: 0,
            targets,
            vars: BTreeMap::new(),
        };
        let v1 =
            || vec![RouteTarget { flow: "ivr".into(), alias: None, version: Some(1), weight: 100 }];
        for bad in ["", "**", "a b", "+1*5"] {
            assert!(
                matches!(
                    store.add_route(&t.id, route(bad, v1())).await,
                    Err(StoreError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            store.add_route(&t.id, route("x", vec![])).await,
            Err(StoreError::Invalid(_))
        ));
        let both = vec![RouteTarget {
            flow: "ivr".into(),
            alias: Some("live".into()),
            version: Some(1),
            weight: 1,
        }];
        assert!(matches!(
            store.add_route(&t.id, route("x", both)).await,
            Err(StoreError::Invalid(_))
        ));
        let missing = vec![RouteTarget {
            flow: "ivr".into(),
            alias: Some("live".into()),
            version: None,
            weight: 1,
        }];
        assert!(matches!(
            store.add_route(&t.id, route("x", missing)).await,
            Err(StoreError::NotFound(_))
        ));
        store.add_route(&t.id, route("sales", v1())).await.unwrap();
        let err = store.add_route(&t.id, route("sales", v1())).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m.contains("already routed")),
            "{err}"
        );
    }
}

fn cdr(tenant: &str, id: &str, to: &str, outcome: &str, started_at: Millis) -> Cdr {
    Cdr {
        id: id.into(),
        tenant_id: tenant.into(),
        direction: "inbound".into(),
        from: "sip:alice@client.test".into(),
        to: to.into(),
        flow: "ivr".into(),
        version: Some(1),
        digest: "sha256:00".into(),
        started_at,
        answered_at: Some(started_at + 10),
        ended_at: started_at + 1000,
        duration_ms: 1000,
        outcome: outcome.into(),
        detail: outcome.into(),
        actions: 3,
    }
}

fn event(tenant: &str, kind: &str, call: &str) -> NewEvent {
    NewEvent {
        tenant_id: tenant.into(),
        kind: kind.into(),
        call_id: Some(call.into()),
        data: serde_json::json!({ "call": call }),
    }
}

#[tokio::test]
async fn cdrs_and_their_events_commit_together_and_filter_per_tenant() {
    for (store, _guard) in stores().await {
        let a = store.create_tenant("acme").await.unwrap();
        let b = store.create_tenant("other").await.unwrap();
        for (i, (to, outcome)) in
            [("+15550100", "completed"), ("+15550101", "hung-up"), ("+15550100", "trapped")]
                .into_iter()
                .enumerate()
        {
            let id = format!("CA{i}");
            let events = store
                .record(Activity {
                    cdr: Some(cdr(&a.id, &id, to, outcome, 1000 * i as i64)),
                    recording: None,
                    events: vec![event(&a.id, "call.completed", &id)],
                })
                .await
                .unwrap();
            assert_eq!(events.len(), 1);
        }
        store
            .record(Activity {
                cdr: Some(cdr(&b.id, "CBx", "+15550100", "completed", 0)),
                recording: None,
                events: vec![event(&b.id, "call.completed", "CBx")],
            })
            .await
            .unwrap();
        let all = store.cdrs(&a.id, &CdrFilter::default()).await.unwrap();
        assert_eq!(all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["CA2", "CA1", "CA0"]);
        let f = |number: Option<&str>, outcome: Option<&str>, since: Option<i64>| CdrFilter {
            number: number.map(Into::into),
            outcome: outcome.map(Into::into),
            since,
            ..CdrFilter::default()
        };
        assert_eq!(store.cdrs(&a.id, &f(Some("+15550100"), None, None)).await.unwrap().len(), 2);
        assert_eq!(store.cdrs(&a.id, &f(Some("alice"), None, None)).await.unwrap().len(), 3);
        let trapped =
            store.cdrs(&a.id, &f(Some("+15550100"), Some("trapped"), None)).await.unwrap();
        assert_eq!(trapped.len(), 1);
        assert_eq!(trapped[0], cdr(&a.id, "CA2", "+15550100", "trapped", 2000));
        assert_eq!(store.cdrs(&a.id, &f(None, None, Some(1000))).await.unwrap().len(), 2);
        assert!(nf(store.cdr(&a.id, "CBx").await), "another tenant's CDR is not found");
        // A CDR id is written once: the whole activity (and its event) is refused.
        let dup = Activity {
            cdr: Some(cdr(&a.id, "CA0", "+1", "completed", 0)),
            recording: None,
            events: vec![event(&a.id, "call.completed", "CA0")],
        };
        assert!(store.record(dup).await.is_err());
        let events = store.events_after(&a.id, 0, 100).await.unwrap();
        assert_eq!(events.len(), 3, "the refused activity left no event");
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(store.events_after(&a.id, events[1].seq, 100).await.unwrap(), events[2..]);
        assert_eq!(store.events_after(&b.id, 0, 100).await.unwrap().len(), 1);
        assert_eq!(store.last_event_seq(&a.id).await.unwrap(), events[2].seq);
    }
}

#[tokio::test]
async fn webhook_deliveries_are_created_with_events_leased_retried_and_given_up() {
    for (store, _guard) in stores().await {
        let a = store.create_tenant("acme").await.unwrap();
        let b = store.create_tenant("other").await.unwrap();
        assert!(matches!(
            store.create_webhook(&a.id, "ftp://x", None).await,
            Err(StoreError::Invalid(_))
        ));
        // Events before the webhook existed are not delivered to it.
        store
            .record(Activity {
                events: vec![event(&a.id, "call.ringing", "c0")],
                ..Default::default()
            })
            .await
            .unwrap();
        let hook = store.create_webhook(&a.id, "http://127.0.0.1:9/hook", None).await.unwrap();
        assert!(hook.secret.starts_with("whsec_"));
        let stored = store
            .record(Activity {
                events: vec![
                    event(&a.id, "call.ringing", "c1"),
                    event(&a.id, "call.answered", "c1"),
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .record(Activity {
                events: vec![event(&b.id, "call.ringing", "x")],
                ..Default::default()
            })
            .await
            .unwrap();
        let due = store.claim_deliveries(10, 60_000).await.unwrap();
        assert_eq!(
            due.iter().map(|d| d.event.id.clone()).collect::<Vec<_>>(),
            [stored[0].id.clone(), stored[1].id.clone()]
        );
        assert_eq!(
            (due[0].url.as_str(), due[0].secret.as_str()),
            (hook.url.as_str(), hook.secret.as_str())
        );
        assert!(store.claim_deliveries(10, 60_000).await.unwrap().is_empty(), "leased");
        store.delivery_attempted(due[0].event.seq, &hook.id, Ok(204), None).await.unwrap();
        // A node whose lease ran out reports its failed attempt late: the delivery stands.
        let late = Err((None, "timed out".into()));
        store.delivery_attempted(due[0].event.seq, &hook.id, late, Some(0)).await.unwrap();
        store
            .delivery_attempted(
                due[1].event.seq,
                &hook.id,
                Err((Some(500), "HTTP 500".into())),
                Some(0),
            )
            .await
            .unwrap();
        let again = store.claim_deliveries(10, 60_000).await.unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 1), "retried when due");
        store
            .delivery_attempted(again[0].event.seq, &hook.id, Err((None, "refused".into())), None)
            .await
            .unwrap();
        let status = store.deliveries(&a.id, &hook.id, None, 10).await.unwrap();
        let by_kind = |k: &str| status.iter().find(|d| d.event_kind == k).unwrap().clone();
        assert_eq!(
            (by_kind("call.ringing").status.as_str(), by_kind("call.ringing").last_status),
            ("delivered", Some(204))
        );
        let failed = by_kind("call.answered");
        assert_eq!((failed.status.as_str(), failed.attempts), ("failed", 2));
        assert_eq!(failed.last_error.as_deref(), Some("refused"));
        assert_eq!(store.deliveries(&a.id, &hook.id, Some("failed"), 10).await.unwrap().len(), 1);
        assert!(nf(store.deliveries(&b.id, &hook.id, None, 10).await), "another tenant's webhook");
        assert!(nf(store.delete_webhook(&b.id, &hook.id).await));
        store.delete_webhook(&a.id, &hook.id).await.unwrap();
        assert!(store.webhooks(&a.id).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn recordings_are_listed_per_tenant_and_deleted() {
    for (store, _guard) in stores().await {
        let a = store.create_tenant("acme").await.unwrap();
        let b = store.create_tenant("other").await.unwrap();
        let meta = RecordingMeta {
            id: "rec-1".into(),
            tenant_id: a.id.clone(),
            call_id: "CA1".into(),
            file: "rec-1.wav".into(),
            duration_ms: 1200,
            channels: 1,
            created_at: 5,
        };
        store
            .record(Activity {
                recording: Some(meta.clone()),
                events: vec![event(&a.id, "recording.completed", "CA1")],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(store.recordings(&a.id, 10).await.unwrap(), std::slice::from_ref(&meta));
        assert!(store.recordings(&b.id, 10).await.unwrap().is_empty());
        assert!(nf(store.recording(&b.id, "rec-1").await));
        assert!(nf(store.delete_recording(&b.id, "rec-1").await));
        assert_eq!(store.delete_recording(&a.id, "rec-1").await.unwrap(), meta);
        assert!(nf(store.recording(&a.id, "rec-1").await));
    }
}

#[tokio::test]
async fn routing_changes_bump_the_generation_other_changes_do_not() {
    for (store, _guard) in stores().await {
        let t = store.create_tenant("acme").await.unwrap();
        let g0 = store.routing_generation().await.unwrap();
        store.create_version(&t.id, "ivr", component(1)).await.unwrap();
        assert_eq!(store.routing_generation().await.unwrap(), g0, "a new version routes nothing");
        store.set_alias(&t.id, "ivr", "live", 1).await.unwrap();
        let g1 = store.routing_generation().await.unwrap();
        assert!(g1 > g0);
        let target = RouteTarget {
            flow: "ivr".into(),
            alias: Some("live".into()),
            version: None,
            weight: 100,
        };
        let new = NewRoute {
            pattern: "+1555*".into(),
            priority: 0,
            targets: vec![target],
            vars: Default::default(),
        };
        let route = store.add_route(&t.id, new.clone()).await.unwrap();
        let g2 = store.routing_generation().await.unwrap();
        assert!(g2 > g1);
        assert!(store.add_route(&t.id, new).await.is_err(), "already routed");
        assert_eq!(store.routing_generation().await.unwrap(), g2, "a refused change bumps nothing");
        // The snapshot resolves targets without a query per route.
        let snapshot = store.routing_snapshot().await.unwrap();
        assert_eq!((snapshot.generation, snapshot.routes.len()), (g2, 1));
        let (v, via) = snapshot.resolve(&t.id, &snapshot.routes[0].targets[0]).unwrap();
        assert_eq!((v.flow.as_str(), v.version, via.as_str()), ("ivr", 1, " via live"));
        let other = RouteTarget {
            flow: "ivr".into(),
            alias: Some("staging".into()),
            version: None,
            weight: 1,
        };
        assert!(matches!(snapshot.resolve(&t.id, &other), Err(StoreError::NotFound(_))));
        assert!(snapshot.resolve("another-tenant", &snapshot.routes[0].targets[0]).is_err());
        store.delete_route(&t.id, &route.id).await.unwrap();
        assert!(store.routing_generation().await.unwrap() > g2);
    }
}

#[tokio::test]
async fn a_batch_of_activities_commits_all_or_nothing() {
    for (store, _guard) in stores().await {
        let a = store.create_tenant("acme").await.unwrap();
        let one = |id: &str| Activity {
            cdr: Some(cdr(&a.id, id, "+1", "completed", 0)),
            recording: None,
            events: vec![event(&a.id, "call.completed", id)],
        };
        let stored = store.record_all(vec![one("CA1"), one("CA2")]).await.unwrap();
        assert_eq!(stored.len(), 2);
        // CA2 again makes the whole batch fail: CA3 is not half-written either.
        assert!(store.record_all(vec![one("CA3"), one("CA2")]).await.is_err());
        assert!(nf(store.cdr(&a.id, "CA3").await));
        assert_eq!(store.events_after(&a.id, 0, 100).await.unwrap().len(), 2);
    }
}

fn lead(number: &str) -> NewLead {
    NewLead { number: number.into(), tz: Some("America/New_York".into()), ..NewLead::default() }
}

#[tokio::test]
async fn campaigns_leads_attempts_and_dnc_are_per_tenant_and_commit_together() {
    for (store, _guard) in stores().await {
        let (tenant, _) = store.bootstrap().await.unwrap().unwrap();
        let other = store.create_tenant("other").await.unwrap();
        let new = || NewCampaign {
            name: "spring".into(),
            strategy: "progressive".into(),
            abandon_target: 0.03,
            settings: serde_json::json!({"agents": ["a1"]}),
        };
        let c = store.create_campaign(&tenant.id, new()).await.unwrap();
        assert!(matches!(
            store.create_campaign(&tenant.id, new()).await,
            Err(StoreError::Conflict(_))
        ));
        // Another tenant may use the name, and cannot see or fill ours.
        store.create_campaign(&other.id, new()).await.unwrap();
        assert!(nf(store.add_leads(&other.id, &c.id, &[lead("+12125550100")]).await));
        assert_eq!(store.campaign(&tenant.id, "spring").await.unwrap().settings["agents"][0], "a1");

        // Duplicates (within the batch or with what is stored) are reported by index.
        let batch = [lead("+12125550100"), lead("+12125550101"), lead("+12125550100")];
        assert_eq!(store.add_leads(&tenant.id, &c.id, &batch).await.unwrap(), (2, vec![2]));
        let more = [lead("+12125550101"), lead("+12125550102")];
        assert_eq!(store.add_leads(&tenant.id, &c.id, &more).await.unwrap(), (1, vec![0]));
        let due = store.due_leads(&c.id, now(), 10).await.unwrap();
        let numbers: Vec<&str> = due.iter().map(|l| l.number.as_str()).collect();
        assert_eq!(numbers, ["+12125550100", "+12125550101", "+12125550102"]);

        // An attempt: the lead is dialling (not due, not startable twice) until it ends.
        let first = &due[0];
        let audit =
            || NewAttempt { local_time: "America/New_York 10:00".into(), rules: "ok".into() };
        // A draft campaign dials no one.
        assert_eq!(store.begin_attempt(first, audit()).await.unwrap(), None);
        store.set_campaign_state(&tenant.id, "spring", "running").await.unwrap();
        let id = store.begin_attempt(first, audit()).await.unwrap().unwrap();
        assert_eq!(store.begin_attempt(first, audit()).await.unwrap(), None);
        assert_eq!(store.due_count(&c.id, now()).await.unwrap(), 2);
        let retry = LeadProgress {
            status: "retry".into(),
            attempts: 1,
            outcomes: serde_json::json!([["abandoned", 1]]),
            disposition: None,
            next_attempt_at: Some(now() + 60_000),
            note: "abandoned: retry in 72 h".into(),
            updated_at: 0,
        };
        let end = AttemptEnd {
            outcome: "abandoned".into(),
            detail: "no agent".into(),
            ..AttemptEnd::default()
        };
        store.end_attempt(&id, &end, &first.id, &retry).await.unwrap();
        let history = store.number_history(&tenant.id, "+12125550100", 0).await.unwrap();
        assert_eq!(history.dials, 1);
        assert!(history.last_abandoned.is_some());
        assert_eq!(
            store.number_history(&other.id, "+12125550100", 0).await.unwrap(),
            NumberHistory::default()
        );
        assert_eq!(store.answered_since(&c.id, 0).await.unwrap().len(), 1);
        let counts = store.campaign_counts(&tenant.id, &c.id).await.unwrap();
        assert_eq!(
            (counts.leads["retry"], counts.leads["new"], counts.attempts["abandoned"]),
            (1, 2, 1)
        );

        // A crash mid-call: the open attempt is closed and its lead recovered.
        let second = &store.due_leads(&c.id, now(), 10).await.unwrap()[0];
        store.begin_attempt(second, audit()).await.unwrap().unwrap();
        let recovered = store
            .recover_attempts(&c.id, |l| LeadProgress {
                status: "retry".into(),
                ..l.progress.clone()
            })
            .await
            .unwrap();
        assert_eq!(recovered, 1);
        assert!(
            store
                .attempts(&tenant.id, &c.id, 10)
                .await
                .unwrap()
                .iter()
                .all(|a| a.ended_at.is_some())
        );

        // Life cycle: draft → running ⇄ paused → finished, and no way back.
        assert_eq!(
            store.set_campaign_state(&tenant.id, "spring", "running").await.unwrap().state,
            "running"
        );
        assert_eq!(store.running_campaigns().await.unwrap().len(), 1);
        store.set_campaign_state(&tenant.id, "spring", "paused").await.unwrap();
        assert_eq!(store.campaign_state(&c.id).await.unwrap(), "paused");
        // Once a pause has committed, no attempt begins.
        let third = &store.due_leads(&c.id, now(), 10).await.unwrap()[0];
        assert_eq!(store.begin_attempt(third, audit()).await.unwrap(), None);
        store.set_campaign_state(&tenant.id, "spring", "finished").await.unwrap();
        assert!(matches!(
            store.set_campaign_state(&tenant.id, "spring", "running").await,
            Err(StoreError::Conflict(_))
        ));

        // DNC: tenant-wide and per campaign, each tenant its own.
        let nums = vec!["+12125550100".to_owned(), "+12125550100".to_owned()];
        assert_eq!(store.add_dnc(&tenant.id, None, &nums, "asked").await.unwrap(), 1);
        assert_eq!(
            store.add_dnc(&tenant.id, Some(&c.id), &["+12125550102".into()], "x").await.unwrap(),
            1
        );
        assert!(store.on_dnc(&tenant.id, &c.id, "+12125550100").await.unwrap());
        assert!(store.on_dnc(&tenant.id, &c.id, "+12125550102").await.unwrap());
        assert!(!store.on_dnc(&tenant.id, "cp_other", "+12125550102").await.unwrap());
        assert!(!store.on_dnc(&other.id, &c.id, "+12125550100").await.unwrap());
        assert_eq!(
            store.dnc(&tenant.id, Some(&c.id), 10).await.unwrap()[0].campaign.as_deref(),
            Some("spring")
        );
        store.remove_dnc(&tenant.id, None, "+12125550100").await.unwrap();
        assert!(nf(store.remove_dnc(&tenant.id, None, "+12125550100").await));
    }
}
