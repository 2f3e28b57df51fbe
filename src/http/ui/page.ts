/**
 * The fleet page's shell and style: static text, no data, no inline script or style (the page is
 * served with a Content-Security-Policy that allows neither). Everything it shows is fetched by
 * app.js with the token the operator types in.
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>qga-gateway fleet</title>
<link rel="stylesheet" href="/ui/app.css">
<link rel="icon" href="/ui/icon.svg" type="image/svg+xml">
<script src="/ui/app.js" defer></script>
</head>
<body>
<header>
  <h1>qga-gateway fleet</h1>
  <span id="status" role="status"></span>
  <button id="logout" type="button" hidden>Forget token</button>
</header>
<main>
  <form id="login" hidden>
    <p>This page shows what the API shows to the token you enter: its scopes and VM globs apply.
    The token is kept in this tab only (session storage).</p>
    <label for="token">API token</label>
    <input id="token" name="token" type="password" autocomplete="off" required>
    <button type="submit">Show the fleet</button>
    <p id="login-error" class="error"></p>
  </form>
  <section id="fleet" hidden>
    <h2>Frozen <span id="freezes-count" class="count"></span></h2>
    <table id="freezes">
      <thead><tr><th>VM / group</th><th>VMs</th><th>Owner</th><th>Frozen at</th><th>Deadline</th><th>Thaws in</th></tr></thead>
      <tbody></tbody>
    </table>
    <h2>VMs <span id="vms-count" class="count"></span></h2>
    <table id="vms">
      <thead><tr><th>VM</th><th>Agent</th><th>Since</th><th>Frozen</th><th>Channel</th><th>Labels</th><th>Last error</th></tr></thead>
      <tbody></tbody>
    </table>
    <h2>Recent errors</h2>
    <table id="errors">
      <thead><tr><th>When</th><th>Where</th><th>What</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>
</body>
</html>
`;

export const PAGE_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { display: flex; gap: 1em; align-items: center; padding: .5em 1em; background: #234; color: #fff; }
header h1 { font-size: 1.1em; margin: 0; }
#status { flex: 1; opacity: .8; }
main { padding: 1em; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5em; background: #fff; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #eee; }
.count { font-weight: normal; color: #666; font-size: .8em; }
.state-up { color: #176117; font-weight: bold; }
.state-down { color: #a00; font-weight: bold; }
.state-unknown { color: #777; }
.expired, .error { color: #a00; }
.label { display: inline-block; background: #e6ecf2; border-radius: 3px; padding: 0 .3em; margin: 0 .2em .1em 0; }
form { max-width: 30em; }
input { width: 100%; padding: .3em; margin: .3em 0; box-sizing: border-box; }
`;

/** the page's icon: a small rounded square (served as /ui/icon.svg) */
export const PAGE_ICON = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect x="1" y="1" width="14" height="14" rx="3" fill="#2b6cb0"/></svg>';
