//! `GET /v1/messages` and the `/inspector` page over [`crate::store::messages`].

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use diax_sdk::wire::broker_paths;
use diax_sdk::{JobId, Problem};
use http::StatusCode;

use super::extract::path_id;
use super::respond::json;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::messages::{self, Filter, LoggedMessage, MessageList};

/// OpenAPI description of the message log routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, inspector, job_timeline))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::MESSAGES, get(list))
        .route("/inspector", get(inspector))
        .route(JOB_TIMELINE, get(job_timeline))
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

/// Where one job's timeline is shown.
const JOB_TIMELINE: &str = "/inspector/jobs/{job_id}";

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
 .muted{color:#6b7280} header .muted{color:#aab2c0}
</style></head>
<body>
<header><h1>broker mock · message inspector</h1>
<form id="f">
 <select name="direction"><option value="">in + out</option><option value="in">in</option><option value="out">out</option></select>
 <input name="provider_id" placeholder="provider_id" size="24">
 <input name="job_id" placeholder="job_id" size="24">
 <input name="limit" value="200" size="4">
 <label><input type="checkbox" id="auto" checked> auto-refresh</label>
 <span class="muted">a job id opens that job's timeline</span>
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
   return '<tr class="'+m.direction+(bad?' refused':'')+'"><td>'+m.id+'</td><td>'+new Date(m.at_ms).toLocaleTimeString()+'</td><td>'+m.direction+'</td><td><code>'+esc(m.method+' '+m.endpoint)+'</code></td><td>'+esc(m.status??'—')+'</td><td><code>'+esc(m.provider_id??'')+'<br>'+(m.job_id?'<a href="/inspector/jobs/'+encodeURIComponent(m.job_id)+'">'+esc(m.job_id)+'</a>':'')+'</code></td><td>'+esc(m.verdict)+(m.reason?'<div class="reason">'+esc(m.reason)+'</div>':'')+'</td><td><details><summary>'+Object.keys(m.headers).length+'</summary><code>'+Object.entries(m.headers).map(([k,v])=>esc(k)+': '+esc(v)).join('<br>')+'</code></details></td></tr>'}).join('')||'<tr><td colspan="8" class="muted">no messages yet</td></tr>';
 }catch(e){rows.innerHTML='<tr><td colspan="8" class="reason">'+esc(e)+'</td></tr>'}
}
f.onsubmit=e=>{e.preventDefault();load()};
setInterval(()=>{if(document.getElementById('auto').checked)load()},2000);load();
</script></body></html>
"#;

/// One job's timeline
///
/// Every logged message about the job, in the order the exchanges started (user → broker →
/// provider and back), with who spoke to whom, the status, the broker's verdict, the time
/// since the job's first message and how long each exchange took; an HTML table that needs no
/// script. At its end the repair picture of the result version, which only the model's
/// owner may see: the page never embeds it; with the owner's API key typed in (or given in
/// the URL fragment `#api_key=…`, which browsers do not send), its script fetches
/// `GET /v1/jobs/{job_id}` and then `GET /v1/models/{id}/versions/{v}/report` with that key
/// and shows the PNG from memory. A development tool: no authentication for the table.
#[utoipa::path(
    get,
    path = "/inspector/jobs/{job_id}",
    operation_id = "job_timeline",
    tag = "messages",
    params(("job_id" = JobId, Path, description = "The job")),
    responses(
        (status = 200, description = "An HTML page (saying so when the log holds no message about the job)", body = String, content_type = "text/html"),
        (status = 400, description = "`invalid-request`: malformed job id", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn job_timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let job: JobId = path_id("job", &id)?;
    let log = messages::timeline(&state.db, job.as_str()).await?;
    Ok(Html(timeline_html(job.as_str(), &log)).into_response())
}

/// Text escaped for HTML content and quoted attributes.
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_quoted_attribute(s)
}

/// Who spoke to whom, read from the message: the provider posts events and fetches inputs
/// with a temporary credential; the broker calls providers (offers, inputs, result
/// downloads) and users (notifications, which name no provider); everything else the broker
/// receives comes from a user.
fn parties(m: &LoggedMessage) -> &'static str {
    if m.direction == "in" {
        let from_provider = (m.endpoint.starts_with("/v1/providers/")
            && m.endpoint.contains("/events"))
            || m.verdict.starts_with("temporary credential");
        if from_provider {
            "provider → broker"
        } else {
            "user → broker"
        }
    } else if m.provider_id.is_none() {
        "broker → user"
    } else {
        "broker → provider"
    }
}

/// Milliseconds as `+1.234 s` / `87 ms`.
fn ms_text(ms: i64) -> String {
    if ms.abs() >= 1000 {
        format!("{:.3} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// The timeline page of `job`.
fn timeline_html(job: &str, log: &[LoggedMessage]) -> String {
    use std::fmt::Write as _;
    let start = |m: &LoggedMessage| m.at_ms - m.duration_ms.unwrap_or(0);
    let first = log.iter().map(start).min().unwrap_or(0);
    let mut rows = String::new();
    for (n, m) in log.iter().enumerate() {
        let bad = m.status.is_some_and(|s| s >= 400)
            || ["refused", "failed", "error", "not sent"]
                .iter()
                .any(|w| m.verdict.contains(w));
        let _ = writeln!(
            rows,
            "<tr class=\"{dir}{bad}\" data-id=\"{id}\"><td>{n}</td><td class=\"num\">+{since}</td><td class=\"num\">{took}</td>\
             <td>{who}</td><td><code>{req}</code></td><td>{status}</td><td>{verdict}{reason}</td></tr>",
            dir = esc(&m.direction),
            bad = if bad { " refused" } else { "" },
            id = m.id,
            n = n + 1,
            since = ms_text(start(m) - first),
            took = m.duration_ms.map_or_else(|| "—".to_owned(), ms_text),
            who = parties(m),
            req = esc(&format!("{} {}", m.method, m.endpoint)),
            status = m.status.map_or_else(|| "—".to_owned(), |s| s.to_string()),
            verdict = esc(&m.verdict),
            reason = m
                .reason
                .as_deref()
                .map(|r| format!("<div class=\"reason\">{}</div>", esc(r)))
                .unwrap_or_default(),
        );
    }
    if log.is_empty() {
        rows.push_str(
            "<tr><td colspan=\"7\" class=\"muted\">the message log holds no message about this job \
             (it keeps only the newest messages)</td></tr>\n",
        );
    }
    let total = log
        .iter()
        .map(|m| m.at_ms)
        .max()
        .map_or(0, |last| last - first);
    TIMELINE_HTML
        .replace("{{JOB}}", &esc(job))
        .replace("{{COUNT}}", &log.len().to_string())
        .replace("{{SPAN}}", &ms_text(total))
        .replace("{{ROWS}}", &rows)
}

const TIMELINE_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>broker mock · job {{JOB}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:10px 16px}
 header h1{font-size:16px;margin:0} header a{color:#9db8ff}
 main{padding:0 16px 24px}
 table{border-collapse:collapse;width:100%;background:#fff;margin-top:12px}
 th,td{padding:5px 8px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
 th{background:#eef0f4} td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
 tr.refused td{background:#fff1f0} tr.out td:first-child{border-left:3px solid #4d7cfe} tr.in td:first-child{border-left:3px solid #31a24c}
 code{font:12px ui-monospace,monospace;word-break:break-all}
 .reason{color:#b3261e} .muted{color:#6b7280}
 section{background:#fff;margin-top:16px;padding:10px 16px;border:1px solid #e3e6eb}
 section h2{font-size:15px;margin:0 0 6px}
 #picture-img{display:block;max-width:100%;margin-top:10px;border:1px solid #e3e6eb}
 input,button{font:inherit;padding:3px 6px}
</style></head>
<body>
<header><h1>broker mock · job <code id="job">{{JOB}}</code></h1>
<a href="/inspector">all messages</a> · <a href="">reload</a></header>
<main>
<p class="muted">{{COUNT}} messages over {{SPAN}}, in the order they started. <b>+</b> is the time since the job's first message, <b>took</b> how long the exchange lasted.</p>
<table id="timeline"><thead><tr><th>#</th><th>+</th><th>took</th><th>who</th><th>request</th><th>status</th><th>verdict</th></tr></thead>
<tbody>
{{ROWS}}</tbody></table>
<section id="picture"><h2>Repair picture of the result</h2>
<p class="muted">The picture shows the owner's model, so this public page does not include it. The owner's API key shows it: it goes only to this broker's API (<code>GET /v1/jobs/…</code> then <code>GET /v1/models/…/versions/…/report</code>), stays in this page, and the picture is kept in memory.</p>
<form id="key"><input type="password" name="api_key" placeholder="owner's API key" autocomplete="off" size="40"> <button>show picture</button></form>
<p id="picture-status" class="muted"></p>
<img id="picture-img" alt="repair picture of the result version" hidden>
</section>
</main>
<script>
const job=document.getElementById('job').textContent,form=document.getElementById('key'),
 say=t=>{document.getElementById('picture-status').textContent=t};
async function problem(r){try{const p=await r.json();return p.detail||p.title||r.status}catch(e){return r.status}}
async function show(key){
 const auth={headers:{authorization:'Bearer '+key}};
 say('loading…');
 try{
  const r=await fetch('/v1/jobs/'+encodeURIComponent(job),auth);
  if(!r.ok){say('the job: '+await problem(r));return}
  const j=await r.json();
  if(!j.result){say('no result version yet (job '+j.state+')');return}
  const p=await fetch('/v1/models/'+encodeURIComponent(j.result.model_id)+'/versions/'+j.result.version+'/report',auth);
  if(!p.ok){say('the picture of '+j.result.model_id+' v'+j.result.version+': '+await problem(p));return}
  const img=document.getElementById('picture-img');
  img.src=URL.createObjectURL(await p.blob());img.hidden=false;
  say(j.result.model_id+' v'+j.result.version);
 }catch(e){say(String(e))}
}
form.onsubmit=e=>{e.preventDefault();const k=new FormData(form).get('api_key');if(k)show(k)};
const m=/[#&]api_key=([^&]+)/.exec(location.hash);
if(m){history.replaceState(null,'',location.pathname+location.search);show(decodeURIComponent(m[1]))}
</script></body></html>
"#;
