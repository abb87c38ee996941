//! `GET /v1/messages` and the `/inspector` page over [`crate::store::messages`].

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use diax_sdk::Problem;
use diax_sdk::wire::broker_paths;
use http::StatusCode;

use super::respond::json;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::messages::{self, Filter, MessageList};

/// OpenAPI description of the message log routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, inspector))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::MESSAGES, get(list))
        .route("/inspector", get(inspector))
}

/// The message log
///
/// Every request in and out, newest first, with the broker's verdict and reason. A
/// development tool: no authentication.
#[utoipa::path(
    get,
    path = "/v1/messages",
    operation_id = "list_messages",
    tag = "messages",
    params(
        ("direction" = Option<String>, Query, description = "`in` (received by the broker) or `out` (sent by it)"),
        ("provider_id" = Option<String>, Query, description = "Only messages about this provider"),
        ("job_id" = Option<String>, Query, description = "Only messages about this job"),
        ("limit" = Option<i64>, Query, description = "At most this many, 1 to 1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "The messages, newest first", body = MessageList),
        (status = 400, description = "`invalid-request`: unknown parameter, bad direction or limit", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let filter = Filter::parse(&q)?;
    Ok(json(
        StatusCode::OK,
        &messages::list(&state.db, &filter).await?,
    ))
}

/// The message inspector
///
/// The message log as a self-refreshing HTML page.
#[utoipa::path(
    get,
    path = "/inspector",
    operation_id = "inspector",
    tag = "messages",
    responses((status = 200, description = "An HTML page", body = String, content_type = "text/html"))
)]
async fn inspector() -> impl IntoResponse {
    Html(INSPECTOR_HTML)
}

const INSPECTOR_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>broker mock · message inspector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:10px 16px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
 header h1{font-size:16px;margin:0}
 form{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
 input,select,button{font:inherit;padding:3px 6px}
 table{border-collapse:collapse;width:100%;background:#fff}
 th,td{padding:5px 8px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
 th{background:#eef0f4;position:sticky;top:0}
 tr.refused td{background:#fff1f0} tr.out td:first-child{border-left:3px solid #4d7cfe} tr.in td:first-child{border-left:3px solid #31a24c}
 code{font:12px ui-monospace,monospace;word-break:break-all}
 .reason{color:#b3261e} details summary{cursor:pointer;color:#4d7cfe}
 .muted{color:#6b7280}
</style></head>
<body>
<header><h1>broker mock · message inspector</h1>
<form id="f">
 <select name="direction"><option value="">in + out</option><option value="in">in</option><option value="out">out</option></select>
 <input name="provider_id" placeholder="provider_id" size="24">
 <input name="job_id" placeholder="job_id" size="24">
 <input name="limit" value="200" size="4">
 <label><input type="checkbox" id="auto" checked> auto-refresh</label>
 <button>show</button>
</form></header>
<table><thead><tr><th>#</th><th>time</th><th>dir</th><th>request</th><th>status</th><th>provider / job</th><th>verdict</th><th>headers</th></tr></thead>
<tbody id="rows"><tr><td colspan="8" class="muted">loading…</td></tr></tbody></table>
<script>
const f=document.getElementById('f'),rows=document.getElementById('rows');
function esc(s){return String(s??'').replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]))}
async function load(){
 const p=new URLSearchParams();for(const [k,v] of new FormData(f)){if(v)p.set(k,v)}
 try{const r=await fetch('/v1/messages?'+p);const j=await r.json();
  if(!r.ok){rows.innerHTML='<tr><td colspan="8" class="reason">'+esc(j.detail||j.title)+'</td></tr>';return}
  rows.innerHTML=j.messages.map(m=>{const bad=(m.status??0)>=400||m.verdict.includes('refused')||m.verdict.includes('failed')||m.verdict.includes('error');
   return '<tr class="'+m.direction+(bad?' refused':'')+'"><td>'+m.id+'</td><td>'+new Date(m.at_ms).toLocaleTimeString()+'</td><td>'+m.direction+'</td><td><code>'+esc(m.method+' '+m.endpoint)+'</code></td><td>'+esc(m.status??'—')+'</td><td><code>'+esc(m.provider_id??'')+'<br>'+esc(m.job_id??'')+'</code></td><td>'+esc(m.verdict)+(m.reason?'<div class="reason">'+esc(m.reason)+'</div>':'')+'</td><td><details><summary>'+Object.keys(m.headers).length+'</summary><code>'+Object.entries(m.headers).map(([k,v])=>esc(k)+': '+esc(v)).join('<br>')+'</code></details></td></tr>'}).join('')||'<tr><td colspan="8" class="muted">no messages yet</td></tr>';
 }catch(e){rows.innerHTML='<tr><td colspan="8" class="reason">'+esc(e)+'</td></tr>'}
}
f.onsubmit=e=>{e.preventDefault();load()};
setInterval(()=>{if(document.getElementById('auto').checked)load()},2000);load();
</script></body></html>
"#;
