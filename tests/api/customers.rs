//! Customer profiles and identification over `/genesys/1/cs`.

use serde_json::json;

use crate::helpers::spawn_app;
use crate::journeys::{Cs, assert_cs_error};

#[tokio::test]
async fn a_profile_is_created_read_and_replaced_keeping_extensions_it_does_not_name() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let body = json!({"FirstName": "Ann", "EmailAddress": ["ann@x.org", "a@x.org"], "Prefs": {"lang": "fr"}});
    let created = cs.post("/profiles", body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["customer_id"].as_str().unwrap().to_string();
    assert!(id.len() <= 16);
    assert_eq!(created.header("location").unwrap(), format!("/genesys/1/cs/profiles/{id}"));

    let read = cs.ok(cs.get(&format!("/profiles/{id}")).await).await;
    assert_eq!(
        read,
        json!({"customer_id": id, "FirstName": "Ann", "EmailAddress": ["ann@x.org", "a@x.org"]})
    );
    let with = cs.ok(cs.get(&format!("/profiles/{id}?extensions=Prefs")).await).await;
    assert_eq!(with["Prefs"], json!({"lang": "fr"}));

    cs.ok(cs.put(&format!("/profiles/{id}"), json!({"LastName": "Lee", "Notes": [{"n": 1}]})).await).await;
    let replaced = cs.ok(cs.get(&format!("/profiles/{id}?extensions=*")).await).await;
    assert_eq!(
        replaced,
        json!({"customer_id": id, "LastName": "Lee", "Notes": [{"n": 1}], "Prefs": {"lang": "fr"}})
    );

    assert_cs_error(&cs.get("/profiles/nobody").await, 404);
    assert_cs_error(&cs.put("/profiles/nobody", json!({"a": 1})).await, 404);
    for bad in [json!({"customer_id": "mine"}), json!({"a": null}), json!({"a": [[1]]}), json!(["x"])] {
        assert_cs_error(&cs.post("/profiles", bad).await, 400);
    }
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn customers_are_identified_by_the_attributes_of_an_identification_key() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let key = json!({"name": "byEmail", "attributes": ["EmailAddress"], "unique": true});
    assert_eq!(cs.post("/metadata/identification-keys", key).await.status, 201);
    let phone = json!({"name": "byPhone", "source": "Phones", "attributes": ["Number"]});
    assert_eq!(cs.post("/metadata/identification-keys", phone).await.status, 201);
    let name = json!({"name": "byName", "attributes": ["LastName", "FirstName"]});
    assert_eq!(cs.post("/metadata/identification-keys", name).await.status, 201);
    let listed = cs.ok(cs.get("/metadata/identification-keys").await).await;
    assert_eq!(listed.as_array().unwrap().len(), 3);

    let create =
        |body| async { cs.post("/profiles", body).await.json()["customer_id"].as_str().unwrap().to_string() };
    let ann = create(json!({"FirstName": "Ann", "LastName": "Lee", "EmailAddress": ["ann@x.org", "a@x.org"],
                             "Phones": [{"Number": "555-1"}]}))
    .await;
    let bob = create(json!({"FirstName": "Bob", "LastName": "Lee", "EmailAddress": "bob@x.org",
                             "Phones": [{"Number": "555-1"}]}))
    .await;

    let found = cs.ok(cs.get("/profiles?EmailAddress=a@x.org").await).await;
    assert_eq!(found, json!([{"customer_id": ann}]));
    let with_profile = cs.ok(cs.get("/profiles?EmailAddress=bob@x.org&include_profile=yes").await).await;
    assert_eq!(with_profile[0]["FirstName"], "Bob");
    let mut shared: Vec<String> = cs.list("/profiles?Phones.Number=555-1", "customer_id").await;
    shared.sort();
    let mut both = vec![ann.clone(), bob.clone()];
    both.sort();
    assert_eq!(shared, both, "a non-unique key may match several customers");
    assert_eq!(
        cs.list("/profiles?LastName=Lee&FirstName=Bob", "customer_id").await,
        std::slice::from_ref(&bob)
    );
    assert_eq!(
        cs.list("/profiles?LastName=Lee&FirstName=Bob&id_key=byName", "customer_id").await,
        std::slice::from_ref(&bob)
    );
    assert_eq!(cs.list("/profiles?EmailAddress=none@x.org", "customer_id").await, Vec::<String>::new());
    assert_cs_error(&cs.get("/profiles?Shoe=42").await, 400);
    assert_cs_error(&cs.get("/profiles?EmailAddress=a@x.org&id_key=byName").await, 400);

    let before = app.event_count();
    assert_cs_error(&cs.post("/profiles", json!({"EmailAddress": "a@x.org"})).await, 409);
    assert_cs_error(
        &cs.put(&format!("/profiles/{bob}"), json!({"EmailAddress": ["bob@x.org", "ann@x.org"]})).await,
        409,
    );
    assert_cs_error(
        &cs.post("/metadata/identification-keys", json!({"name": "BYEMAIL", "attributes": ["X"]})).await,
        409,
    );
    let unique_phone =
        json!({"name": "uniquePhone", "source": "Phones", "attributes": ["Number"], "unique": true});
    assert_cs_error(&cs.post("/metadata/identification-keys", unique_phone).await, 409);
    for bad in [
        json!({"name": "1st", "attributes": ["A"]}),
        json!({"name": "ok", "attributes": []}),
        json!({"name": "x".repeat(27), "attributes": ["A"]}),
    ] {
        assert_cs_error(&cs.post("/metadata/identification-keys", bad).await, 400);
    }
    assert_eq!(app.event_count(), before, "refused calls write nothing");

    cs.ok(cs.put(&format!("/profiles/{bob}"), json!({"EmailAddress": "robert@x.org"})).await).await;
    assert_eq!(cs.list("/profiles?EmailAddress=robert@x.org", "customer_id").await, [bob]);
    assert_eq!(cs.list("/profiles?EmailAddress=bob@x.org", "customer_id").await, Vec::<String>::new());
    assert!(app.verify().mismatch.is_none());
}
