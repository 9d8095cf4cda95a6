// The console's texts in English and Chinese (web/i18n.js). The language follows the
// browser's (navigator.languages) until the operator picks one with the switch, which is
// remembered in localStorage. Every text of the page is here; index.html names its static
// texts with data-i18n (text), data-i18n-placeholder and data-i18n-label (aria-label).

const LANG_KEY = "customs179-lang";
export const LANGS = ["en", "zh-CN"];

const en = {
  title: "customs179 console",
  titleRisk: (n) => `(${n} at risk) customs179 console`,
  tokenPlaceholder: "admin token",
  open: "Open",
  forget: "Forget token",
  production: "production",
  test: "test",
  unknownEnv: "environment unknown",
  updatedAgo: (s) => `updated ${s} s ago`,
  never: "not updated yet",
  stale: (s) => `The live stream is lost (last update ${s} s ago): the figures may be out of date. Reconnecting…`,
  staleNever: "No live stream yet: connecting…",
  signedInAs: (name, role) => `${name} (${role === "operator" ? "operator" : "viewer"})`,
  atRisk: (n, secs) => `${n} at risk (under ${secs} s left)`,
  pastDeadline: (n) => `${n} past the deadline`,
  lateCount: (n) => `late: ${n}`,
  oldestPending: (age) => `oldest pending: ${age}`,
  noPending: "nothing pending",
  allWell: "No request is at risk.",
  health: "Health",
  card: (name) => `Card ${name}`,
  customs: "Customs",
  connected: "connected",
  disconnected: "not connected",
  drivenBy: (name) => `driven by ${name}`,
  driverDead: (name) => `driven by ${name}, which stopped beating: another instance takes it over`,
  instances: "Instances",
  instanceAlive: (name, since) => `${name}: running since ${since}`,
  instanceStopped: (name, at, why) => `${name}: stopped ${at} (${why})`,
  instanceSilent: (name, at) => `${name}: no heartbeat since ${at}`,
  certDays: (d) => `certificate: ${d} days left`,
  certUnknown: "certificate: unknown",
  lastSignature: (t) => `last signature: ${t}`,
  lastSuccess: (t) => `last delivery: ${t}`,
  lastError: (t) => `last error: ${t}`,
  answersLastHour: "answers in the last hour:",
  pausedBy: (reason, by, since) => `paused${by ? " by " + by : ""} since ${since}: ${reason}`,
  stoppedBy: (reason, by, since) => `stopped${by ? " by " + by : ""} since ${since}: ${reason}`,
  uploadsStoppedBy: (reason, by, since) => `uploads paused${by ? " by " + by : ""} since ${since}: ${reason}`,
  onCard: (stage, card) => `${stage} on card ${card}`,
  pause: (stage) => `Pause ${stage}`,
  resume: (stage) => `Resume ${stage}`,
  stage: { signing: "signing", uploading: "uploading" },
  pausedBanner: (stage) => `${stage} paused`,
  since: (t) => ` since ${t}: `,
  askPause: (stage) => `Why pause ${stage}?`,
  askResume: (stage) => `Resume ${stage}: why? (optional)`,
  reason: "reason",
  ok: "OK",
  cancel: "Cancel",
  reasonNeeded: "A reason is needed.",
  chart: "The last hour",
  chartNote: "Bars: deliveries per minute (left scale). Lines: the hour's one p95 of call-to-delivered against the deadline (right scale); the API gives one p95 for the hour, not one per minute.",
  chartLegend: (n, p50, p95, p99, deadline) => `${n} delivered; p50 ${p50}, p95 ${p95}, p99 ${p99}; deadline ${deadline}`,
  minutesAgo: (m) => `${m} min ago`,
  now: "now",
  p95: "p95",
  deadline: "deadline",
  requests: "Requests",
  filterState: "State",
  all: "all",
  late: "late",
  lateOnly: "late only",
  atRiskOnly: "at risk only",
  code: "code",
  from: "from",
  until: "until",
  search: "Search",
  searchBy: { order: "orderNo", session: "sessionID" },
  searchPlaceholder: "orderNo or sessionID prefix",
  sortBy: { deadline: "soonest deadline first", received: "newest first" },
  clear: "Clear",
  more: "More",
  updates: (n) => `${n} updates waiting (move the pointer away, or click)`,
  cols: ["received", "sessionID", "order", "state", "deadline", "attempts", "last error", ""],
  replay: "Replay",
  left: (t) => `${t} left`,
  over: (t) => `${t} over`,
  lateMark: " (late)",
  empty: "No request matches.",
  selected: (n) => `${n} selected`,
  replaySelected: "Replay selected (dry run)",
  alerts: "Alerts",
  noActiveAlerts: "No alert condition holds now.",
  alertChannels: (list) => `Sent to: ${list}`,
  noAlertChannels: "No alert channel is configured ([[alerts]]): alerts are only shown here.",
  alertSince: (at) => `since ${at}`,
  alertCols: ["time", "severity", "what", "event", "count", "detail", "deliveries"],
  alertKind: {
    signing_paused: "signing paused", uploads_stopped: "uploads stopped", signer_unreachable: "signer unreachable",
    at_risk: "requests at risk", late: "requests late", certificate: "certificate expiring",
    customs_errors: "customs errors", requests_failed: "requests failed",
  },
  alertEvent: { raised: "raised", cleared: "all clear" },
  severity: { info: "info", warning: "warning", critical: "critical" },
  deliveryState: { pending: "pending", sent: "sent", failed: "given up" },
  deliveryAttempts: (n) => `${n} attempt${n === 1 ? "" : "s"}`,
  failures: "Failures",
  failuresTotal: (n) => `${n} failed`,
  noFailures: "No failed request.",
  failureCols: ["stage", "cause", "count", "customs called", "example", ""],
  replayGroup: "Replay group (dry run)",
  dryRunCount: (n) => `The dry run took ${n} failed request(s). Replay them? Give a reason.`,
  dryRunNone: "The dry run found no failed request to replay.",
  notTaken: (n) => `${n} of those selected are not failed and are left out.`,
  confirmReplay: "Replay them",
  progress: (job) => `Replay ${job.id}: ${job.status}, ${job.replayed} of ${job.count} replayed, ${job.skipped} skipped, ${job.to_do} to do`,
  detail: "Request",
  summary: (d, state, received, deadline) => `order ${d.order_no}, ${state}, received ${received}, deadline ${deadline}`,
  timeline: "Timeline",
  timelineCols: ["at", "step", "outcome", "code", "took", "certNo", "detail"],
  attempts: "Attempts",
  attemptCols: ["at", "step", "outcome", "detail"],
  presign: (guid) => `Pre-sign string (guid ${guid})`,
  uploadBody: "Upload body",
  copy: "Copy",
  copied: "copied",
  selectedToCopy: "selected: press Ctrl+C to copy",
  close: "Close",
  states: { waiting: "waiting", ready: "ready", signed: "signed", delivered: "delivered", failed: "failed" },
  language: "Language",
  viewerNote: "Read only: this token is a viewer's.",
};

const zh = {
  title: "customs179 控制台",
  titleRisk: (n) => `(${n} 个有超时风险) customs179 控制台`,
  tokenPlaceholder: "管理令牌",
  open: "打开",
  forget: "清除令牌",
  production: "生产环境",
  test: "测试环境",
  unknownEnv: "环境未知",
  updatedAgo: (s) => `${s} 秒前更新`,
  never: "尚未更新",
  stale: (s) => `实时连接已断开(上次更新于 ${s} 秒前),数据可能已过时。正在重新连接…`,
  staleNever: "尚无实时连接:正在连接…",
  signedInAs: (name, role) => `${name}(${role === "operator" ? "操作员" : "只读"})`,
  atRisk: (n, secs) => `${n} 个有超时风险(剩余不足 ${secs} 秒)`,
  pastDeadline: (n) => `${n} 个已超过时限`,
  lateCount: (n) => `超时:${n}`,
  oldestPending: (age) => `最早的待处理请求:${age}`,
  noPending: "没有待处理的请求",
  allWell: "没有请求有超时风险。",
  health: "运行状况",
  card: (name) => `IC 卡 ${name}`,
  customs: "海关",
  connected: "已连接",
  disconnected: "未连接",
  drivenBy: (name) => `由 ${name} 驱动`,
  driverDead: (name) => `由 ${name} 驱动,但它已无心跳:将由另一实例接管`,
  instances: "实例",
  instanceAlive: (name, since) => `${name}:自 ${since} 起运行`,
  instanceStopped: (name, at, why) => `${name}:${at} 停止(${why})`,
  instanceSilent: (name, at) => `${name}:自 ${at} 起无心跳`,
  certDays: (d) => `证书:剩余 ${d} 天`,
  certUnknown: "证书:未知",
  lastSignature: (t) => `最近签名:${t}`,
  lastSuccess: (t) => `最近送达:${t}`,
  lastError: (t) => `最近错误:${t}`,
  answersLastHour: "最近一小时的回执:",
  pausedBy: (reason, by, since) => `${by ? by + " " : ""}自 ${since} 起暂停:${reason}`,
  stoppedBy: (reason, by, since) => `${by ? by + " " : ""}自 ${since} 起停止:${reason}`,
  uploadsStoppedBy: (reason, by, since) => `${by ? by + " " : ""}自 ${since} 起暂停上传:${reason}`,
  onCard: (stage, card) => `IC 卡 ${card} 的${stage}`,
  pause: (stage) => `暂停${stage}`,
  resume: (stage) => `恢复${stage}`,
  stage: { signing: "签名", uploading: "上传" },
  pausedBanner: (stage) => `${stage}已暂停`,
  since: (t) => `,自 ${t} 起:`,
  askPause: (stage) => `暂停${stage}的原因?`,
  askResume: (stage) => `恢复${stage}的原因(可不填)`,
  reason: "原因",
  ok: "确定",
  cancel: "取消",
  reasonNeeded: "请填写原因。",
  chart: "最近一小时",
  chartNote: "柱:每分钟送达数(左侧刻度)。线:本小时从海关调用到送达的 p95 与时限(右侧刻度);接口只提供整小时的一个 p95,没有每分钟的 p95。",
  chartLegend: (n, p50, p95, p99, deadline) => `已送达 ${n} 个;p50 ${p50},p95 ${p95},p99 ${p99};时限 ${deadline}`,
  minutesAgo: (m) => `${m} 分钟前`,
  now: "现在",
  p95: "p95",
  deadline: "时限",
  requests: "请求",
  filterState: "状态",
  all: "全部",
  late: "超时",
  lateOnly: "仅超时",
  atRiskOnly: "仅有风险",
  code: "代码",
  from: "从",
  until: "到",
  search: "搜索",
  searchBy: { order: "订单号", session: "sessionID" },
  searchPlaceholder: "订单号或 sessionID 前缀",
  sortBy: { deadline: "时限最近的在前", received: "最新的在前" },
  clear: "清除",
  more: "更多",
  updates: (n) => `${n} 项更新待显示(移开指针或点击)`,
  cols: ["接收时间", "sessionID", "订单号", "状态", "时限", "尝试次数", "最近错误", ""],
  replay: "重放",
  left: (t) => `剩余 ${t}`,
  over: (t) => `超出 ${t}`,
  lateMark: "(超时)",
  empty: "没有匹配的请求。",
  selected: (n) => `已选 ${n} 个`,
  replaySelected: "重放所选(试运行)",
  alerts: "告警",
  noActiveAlerts: "当前没有告警。",
  alertChannels: (list) => `发送到：${list}`,
  noAlertChannels: "未配置告警渠道（[[alerts]]）：告警只在此处显示。",
  alertSince: (at) => `开始于 ${at}`,
  alertCols: ["时间", "级别", "内容", "事件", "数量", "详情", "发送情况"],
  alertKind: {
    signing_paused: "加签已暂停", uploads_stopped: "上传已停止", signer_unreachable: "加签客户端无法连接",
    at_risk: "请求即将超时", late: "请求已超时", certificate: "证书即将过期",
    customs_errors: "海关返回错误", requests_failed: "请求失败",
  },
  alertEvent: { raised: "告警", cleared: "已恢复" },
  severity: { info: "提示", warning: "警告", critical: "严重" },
  deliveryState: { pending: "待发送", sent: "已发送", failed: "已放弃" },
  deliveryAttempts: (n) => `尝试 ${n} 次`,
  failures: "失败",
  failuresTotal: (n) => `${n} 个失败`,
  noFailures: "没有失败的请求。",
  failureCols: ["环节", "原因", "数量", "海关调用时间", "示例", ""],
  replayGroup: "重放本组(试运行)",
  dryRunCount: (n) => `试运行选中了 ${n} 个失败的请求。要重放吗?请填写原因。`,
  dryRunNone: "试运行没有找到可重放的失败请求。",
  notTaken: (n) => `所选中有 ${n} 个不是失败状态,已排除。`,
  confirmReplay: "重放",
  progress: (job) => `重放 ${job.id}:${job.status},已重放 ${job.replayed}/${job.count},跳过 ${job.skipped},待处理 ${job.to_do}`,
  detail: "请求",
  summary: (d, state, received, deadline) => `订单 ${d.order_no},${state},接收于 ${received},时限 ${deadline}`,
  timeline: "时间线",
  timelineCols: ["时间", "步骤", "结果", "代码", "耗时", "证书号", "详情"],
  attempts: "尝试记录",
  attemptCols: ["时间", "步骤", "结果", "详情"],
  presign: (guid) => `待签名字符串(guid ${guid})`,
  uploadBody: "上传报文",
  copy: "复制",
  copied: "已复制",
  selectedToCopy: "已选中:按 Ctrl+C 复制",
  close: "关闭",
  states: { waiting: "等待数据", ready: "待签名", signed: "已签名", delivered: "已送达", failed: "失败" },
  language: "语言",
  viewerNote: "只读:此令牌为查看者令牌。",
};

const TEXTS = { en, "zh-CN": zh };
let current = pick();

/** The remembered choice, else the first of the browser's languages we have. */
function pick() {
  const chosen = localStorage.getItem(LANG_KEY);
  if (LANGS.includes(chosen)) return chosen;
  for (const lang of navigator.languages || [navigator.language || "en"]) {
    if (/^zh\b/i.test(lang)) return "zh-CN";
    if (/^en\b/i.test(lang)) return "en";
  }
  return "en";
}

export function lang() { return current; }

export function setLang(value) {
  if (!LANGS.includes(value)) return;
  current = value;
  localStorage.setItem(LANG_KEY, value);
}

/** The text `key` in the current language; a function's result with `args`. */
export function t(key, ...args) {
  const text = TEXTS[current][key] ?? en[key];
  return typeof text === "function" ? text(...args) : text;
}

export function stateName(state) { return t("states")[state] ?? state; }
export function stageName(stage) { return t("stage")[stage] ?? stage; }

/** The static texts of index.html, in the current language. */
export function applyStatic() {
  document.documentElement.lang = current;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of document.querySelectorAll("[data-i18n-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  }
}

/** A time of day (or date and time, when not today) in the current language. */
export function time(ms) {
  if (!ms) return "";
  const date = new Date(ms);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString(current) : date.toLocaleString(current);
}

/** A duration: 1:05, 12 s, 2 h 03 min. */
export function duration(ms) {
  const secs = Math.max(0, Math.round(ms / 1000));
  if (secs < 60) return current === "en" ? `${secs} s` : `${secs} 秒`;
  if (secs < 3600) return `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
  const h = Math.floor(secs / 3600);
  const m = String(Math.floor((secs % 3600) / 60)).padStart(2, "0");
  return current === "en" ? `${h} h ${m} min` : `${h} 小时 ${m} 分`;
}
