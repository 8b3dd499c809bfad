// The only module that talks to Tauri. Everything else imports from here, so
// the rest of the UI can be read (and tested) without a backend.
import { Channel, invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type { EnvironmentView } from "./generated/EnvironmentView";
import type { FormCheck } from "./generated/FormCheck";
import type { LiveUpdate } from "./generated/LiveUpdate";
import type { Problem } from "./generated/Problem";
import type { RolloutEvent } from "./generated/RolloutEvent";
import type { RolloutOutcome } from "./generated/RolloutOutcome";
import type { ServiceForm } from "./generated/ServiceForm";
import type { TrafficView } from "./generated/TrafficView";
import type { ServicesUpdate } from "./generated/ServicesUpdate";
import type { ContainerDetail } from "./generated/ContainerDetail";
import type { LogBatch } from "./generated/LogBatch";
import type { LogQuery } from "./generated/LogQuery";
import type { TerminalEvent } from "./generated/TerminalEvent";
import type { TerminalOpened } from "./generated/TerminalOpened";
import type { NewEnvironment } from "./generated/NewEnvironment";
import type { ConnectionTest } from "./generated/ConnectionTest";
import type { TrafficUpdate } from "./generated/TrafficUpdate";
import type { ServiceView } from "./generated/ServiceView";
import type { Strategy } from "./generated/Strategy";
import type { VolumeDetail } from "./generated/VolumeDetail";
import type { ImageTags } from "./generated/ImageTags";
import type { RedeployUpdate } from "./generated/RedeployUpdate";
import type { RegistryLogin } from "./generated/RegistryLogin";
import type { Listing } from "./generated/Listing";
import type { FilePreview } from "./generated/FilePreview";
import type { SizeWalk } from "./generated/SizeWalk";
import type { Unpacked } from "./generated/Unpacked";
import type { Snapshot } from "./generated/Snapshot";
import type { Copied } from "./generated/Copied";
import type { VolumeDiff } from "./generated/VolumeDiff";
import type { TextDiff } from "./generated/TextDiff";
import type { Restored } from "./generated/Restored";
import type { VolumeUser } from "./generated/VolumeUser";
import type { VolumeSizes } from "./generated/VolumeSizes";
import type { Search } from "./generated/Search";
import type { SqliteInfo } from "./generated/SqliteInfo";

export type { Candidate } from "./generated/Candidate";
export type { Removal } from "./generated/Removal";
export type { ServicePlan } from "./generated/ServicePlan";
export type { FieldChange } from "./generated/FieldChange";
export type { StackRemoval } from "./generated/StackRemoval";
export type { VolumeDetail } from "./generated/VolumeDetail";
export type { Listing } from "./generated/Listing";
export type { Entry } from "./generated/Entry";
export type { FilePreview } from "./generated/FilePreview";
export type { SizeWalk } from "./generated/SizeWalk";
export type { Unpacked } from "./generated/Unpacked";
export type { Snapshot } from "./generated/Snapshot";
export type { Copied } from "./generated/Copied";
export type { VolumeDiff } from "./generated/VolumeDiff";
export type { EntryChange } from "./generated/EntryChange";
export type { TextDiff } from "./generated/TextDiff";
export type { DiffLine } from "./generated/DiffLine";
export type { Restored } from "./generated/Restored";
export type { VolumeUser } from "./generated/VolumeUser";
export type { VolumeSizes } from "./generated/VolumeSizes";
export type { Search } from "./generated/Search";
export type { SqliteInfo } from "./generated/SqliteInfo";
export type { SqliteTable } from "./generated/SqliteTable";
export type { Found } from "./generated/Found";
export type { PullProgress } from "./generated/PullProgress";
export type { PullLayer } from "./generated/PullLayer";
export type { ImageTags } from "./generated/ImageTags";
export type { ImageTag } from "./generated/ImageTag";
export type { RegistryLogin } from "./generated/RegistryLogin";
export type { RedeployUpdate } from "./generated/RedeployUpdate";
export type { RedeployCheck } from "./generated/RedeployCheck";
export type { Strategy } from "./generated/Strategy";
export type { ConnectionState } from "./generated/ConnectionState";
export type { Container } from "./generated/Container";
export type { ContainerState } from "./generated/ContainerState";
export type { DaemonInfo } from "./generated/DaemonInfo";
export type { Endpoint } from "./generated/Endpoint";
export type { EnvironmentList } from "./generated/EnvironmentList";
export type { EnvironmentSource } from "./generated/EnvironmentSource";
export type { EnvironmentSpec } from "./generated/EnvironmentSpec";
export type { EnvironmentView } from "./generated/EnvironmentView";
export type { Group } from "./generated/Group";
export type { GroupKind } from "./generated/GroupKind";
export type { Image } from "./generated/Image";
export type { Inventory } from "./generated/Inventory";
export type { InventoryChange } from "./generated/InventoryChange";
export type { LiveUpdate } from "./generated/LiveUpdate";
export type { Mount } from "./generated/Mount";
export type { Network } from "./generated/Network";
export type { PortMapping } from "./generated/PortMapping";
export type { Problem } from "./generated/Problem";
export type { ProblemCode } from "./generated/ProblemCode";
export type { TlsFiles } from "./generated/TlsFiles";
export type { Volume } from "./generated/Volume";
export type { ContainerView } from "./generated/ContainerView";
export type { Release } from "./generated/Release";
export type { ReleaseResult } from "./generated/ReleaseResult";
export type { RolloutEvent } from "./generated/RolloutEvent";
export type { RolloutOutcome } from "./generated/RolloutOutcome";
export type { ServiceView } from "./generated/ServiceView";
export type { SlotPhase } from "./generated/SlotPhase";
export type { SlotTimings } from "./generated/SlotTimings";
export type { FormCheck } from "./generated/FormCheck";
export type { FormEnvVar } from "./generated/FormEnvVar";
export type { FormIssue } from "./generated/FormIssue";
export type { FormPort } from "./generated/FormPort";
export type { FormVolume } from "./generated/FormVolume";
export type { ServiceForm } from "./generated/ServiceForm";
export type { ReleaseMetrics } from "./generated/ReleaseMetrics";
export type { TrafficView } from "./generated/TrafficView";
export type { ServicesUpdate } from "./generated/ServicesUpdate";
export type { ContainerDetail } from "./generated/ContainerDetail";
export type { EnvVar } from "./generated/EnvVar";
export type { LogBatch } from "./generated/LogBatch";
export type { LogLine } from "./generated/LogLine";
export type { LogQuery } from "./generated/LogQuery";
export type { TerminalEvent } from "./generated/TerminalEvent";
export type { TerminalOpened } from "./generated/TerminalOpened";
export type { NewEnvironment } from "./generated/NewEnvironment";
export type { ConnectionTest } from "./generated/ConnectionTest";
export type { SshHostKey } from "./generated/SshHostKey";
export type { TrafficUpdate } from "./generated/TrafficUpdate";

/** Every environment with its state and last inventory. */
export function environments(): Promise<EnvironmentView[]> {
  return invoke<EnvironmentView[]>("environments").catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Follows live updates from every environment. */
export function onLiveUpdate(handler: (update: LiveUpdate) => void): Promise<UnlistenFn> {
  return listen<LiveUpdate>("live", (event) => handler(event.payload));
}

/** Every service of an environment, pushed whenever one changes. */
export function onServices(handler: (update: ServicesUpdate) => void): Promise<UnlistenFn> {
  return listen<ServicesUpdate>("services", (event) => handler(event.payload));
}

/** What an automatic redeploy (`x-changeover.autoredeploy`) did while the app is open. */
export function onRedeploy(handler: (update: RedeployUpdate) => void): Promise<UnlistenFn> {
  return listen<RedeployUpdate>("redeploy", (event) => handler(event.payload));
}

/** A followed service's traffic, pushed once a second (see `watchTraffic`). */
export function onTraffic(handler: (update: TrafficUpdate) => void): Promise<UnlistenFn> {
  return listen<TrafficUpdate>("traffic", (event) => handler(event.payload));
}

/** Starts (`on`) or stops the backend pushing STACK/SERVICE's traffic. */
export function watchTraffic(env: string, service: string, on: boolean): Promise<void> {
  return invoke<void>("watch_traffic", { env, service, on }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Services on an environment with their releases and containers. */
export function services(env: string): Promise<ServiceView[]> {
  return invoke<ServiceView[]>("services", { env }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

function channel(onEvent: (e: RolloutEvent) => void): Channel<RolloutEvent> {
  const c = new Channel<RolloutEvent>();
  c.onmessage = onEvent;
  return c;
}

/**
 * Rolls STACK/SERVICE to another tag; progress arrives on `onEvent`. With
 * `stopId` (from `newTransfer`), `cancelTransfer(stopId)` stops its pull.
 */
export function deployTag(
  env: string,
  service: string,
  tag: string,
  strategy: Strategy | null,
  onEvent: (e: RolloutEvent) => void,
  pull = false,
  stopId: number | null = null,
): Promise<RolloutOutcome> {
  return invoke<RolloutOutcome>("deploy_tag", { env, service, tag, strategy, pull, stopId, onEvent: channel(onEvent) }).catch(
    (e: unknown) => {
      throw toProblem(e);
    },
  );
}

/** Rolls STACK/SERVICE back to its previous release. */
export function rollback(env: string, service: string, onEvent: (e: RolloutEvent) => void): Promise<RolloutOutcome> {
  return invoke<RolloutOutcome>("rollback", { env, service, onEvent: channel(onEvent) }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Deploys the sample stack; resolves to the port it answers on. */
export function trySandbox(env: string, onEvent: (e: RolloutEvent) => void): Promise<number> {
  return invoke<number>("try_sandbox", { env, onEvent: channel(onEvent) }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** The form for editing STACK/SERVICE, or a blank one for a new service in STACK. */
export function serviceForm(env: string, name: string): Promise<ServiceForm> {
  return invoke<ServiceForm>("service_form", { env, name }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Checks a service form; changes nothing. */
export function checkServiceForm(env: string, form: ServiceForm): Promise<FormCheck> {
  return invoke<FormCheck>("check_service_form", { env, form }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Creates or changes the service a form describes; progress arrives on `onEvent`. */
export function deployServiceForm(
  env: string,
  form: ServiceForm,
  onEvent: (e: RolloutEvent) => void,
): Promise<RolloutOutcome> {
  return invoke<RolloutOutcome>("deploy_service_form", { env, form, onEvent: channel(onEvent) }).catch(
    (e: unknown) => {
      throw toProblem(e);
    },
  );
}

/** A stack's services as a Compose file. */
export function exportStack(env: string, stack: string): Promise<string> {
  return invoke<string>("export_stack", { env, stack }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Writes text to a file (`~/` allowed); resolves to the full path written. */
export function saveStackFile(path: string, text: string, replace: boolean): Promise<string> {
  return invoke<string>("save_stack_file", { path, text, replace }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** A service's routes on the edge with their split and per-release figures. */
export function traffic(env: string, service: string): Promise<TrafficView> {
  return invoke<TrafficView>("traffic", { env, service }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Pauses STACK/SERVICE behind a 503 page with `message`; `null` resumes it. */
export function setMaintenance(env: string, service: string, message: string | null): Promise<void> {
  return invoke<void>("set_maintenance", { env, service, message }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Every new request of STACK/SERVICE to one release (number or tag). */
export function switchTraffic(env: string, service: string, to: string): Promise<number> {
  return invoke<number>("switch_traffic", { env, service, to }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** `percent` of new clients to the candidate release, sticky per client. */
export function splitTraffic(env: string, service: string, percent: number): Promise<void> {
  return invoke<void>("split_traffic", { env, service, percent }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** The candidate becomes current; the old release drains and stops. Answers what happened. */
export function promoteRelease(env: string, service: string): Promise<string> {
  return invoke<string>("promote_release", { env, service }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** The candidate is removed; all traffic back to the current release. */
export function abortRelease(env: string, service: string): Promise<string> {
  return invoke<string>("abort_release", { env, service }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Starts a preview of the candidate (answers its token) or ends it. */
export function previewRelease(env: string, service: string, on: boolean): Promise<string | null> {
  return invoke<string | null>("preview_release", { env, service, on }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

function call<T>(command: string, args: Record<string, unknown>): Promise<T> {
  return invoke<T>(command, args).catch((e: unknown) => {
    throw toProblem(e);
  });
}

// ---- environments ----

/** Tries to reach the environment a form describes; saves nothing. */
export function testEnvironment(form: NewEnvironment): Promise<ConnectionTest> {
  return call("test_environment", { form });
}

/** Trusts the SSH host key of `host` with `fingerprint`, as a test showed it. */
export function trustHostKey(host: string, fingerprint: string): Promise<void> {
  return call("trust_host_key", { host, fingerprint });
}

/** Adds an environment; unless `anyway`, only when it answers. */
export function addEnvironment(form: NewEnvironment, anyway: boolean): Promise<EnvironmentView> {
  return call("add_environment", { form, anyway });
}

/** Changes an environment added in Changeover. */
export function editEnvironment(name: string, form: NewEnvironment, anyway: boolean): Promise<EnvironmentView> {
  return call("edit_environment", { name, form, anyway });
}

/** Removes an environment added in Changeover, and its keyring entries. */
export function removeEnvironment(name: string): Promise<void> {
  return call("remove_environment", { name });
}

// ---- container detail ----

/** What `docker inspect` says of a container (name, ID or STACK/SERVICE/SLOT). */
export function containerDetail(env: string, target: string): Promise<ContainerDetail> {
  return call("container_detail", { env, target });
}

/** Follows a container's (or a whole service's) logs; resolves to the follow's number. */
export function followLogs(
  env: string,
  target: string,
  query: LogQuery,
  onBatch: (b: LogBatch) => void,
): Promise<number> {
  const c = new Channel<LogBatch>();
  c.onmessage = onBatch;
  return call("follow_logs", { env, target, query, onBatch: c });
}

export function stopLogs(id: number): Promise<void> {
  return call("stop_logs", { id });
}

/** Opens a terminal into a container: its shell, or with `debug` the debug shell. */
export function openTerminal(
  env: string,
  target: string,
  debug: boolean,
  cols: number,
  rows: number,
  onEvent: (e: TerminalEvent) => void,
): Promise<TerminalOpened> {
  const c = new Channel<TerminalEvent>();
  c.onmessage = onEvent;
  return call("open_terminal", { env, target, debug, cols, rows, onEvent: c });
}

export function terminalInput(id: number, data: string): Promise<void> {
  return call("terminal_input", { id, data });
}

export function terminalResize(id: number, cols: number, rows: number): Promise<void> {
  return call("terminal_resize", { id, cols, rows });
}

export function closeTerminal(id: number): Promise<void> {
  return call("close_terminal", { id });
}

/** Writes text to a file (`~/` allowed); resolves to the full path written. */
export function saveTextFile(path: string, text: string, replace: boolean): Promise<string> {
  return call("save_text_file", { path, text, replace });
}

function toProblem(e: unknown): Problem {
  if (typeof e === "object" && e !== null && "code" in e && "message" in e) {
    return e as Problem;
  }
  return { code: "daemon-error", message: String(e) };
}

// ---- volumes ----

/** A volume: driver, labels, who uses it now, which releases mounted it. */
export function volumeInspect(env: string, name: string): Promise<VolumeDetail> {
  return call("volume_inspect", { env, name });
}

/** One page of the folder `path` (escaped) in volume `name`. */
export function volumeFiles(env: string, name: string, path: string, after: string | null, limit: number | null): Promise<Listing> {
  return call("volume_files", { env, name, path, after, limit });
}

/** The start of a file (up to 1 MB), for its preview. */
export function volumePreview(env: string, name: string, path: string): Promise<FilePreview> {
  return call("volume_preview", { env, name, path });
}

/** Counts what a folder holds, with progress about every 200 ms. */
export function volumeSize(env: string, name: string, path: string, onProgress: (w: SizeWalk) => void): Promise<SizeWalk> {
  const c = new Channel<SizeWalk>();
  c.onmessage = onProgress;
  return call("volume_size", { env, name, path, onProgress: c });
}

/** Downloads `path` to the local file `dest` (a folder as .tar.gz); resolves to the file written. */
export function volumeDownload(
  env: string,
  name: string,
  path: string,
  dest: string,
  replace: boolean,
  onProgress: (bytes: number) => void,
  transfer: number | null = null,
): Promise<string> {
  const c = new Channel<number>();
  c.onmessage = onProgress;
  return call("volume_download", { env, name, path, dest, replace, transfer, onProgress: c });
}

/** A number to name a transfer by, for `cancelTransfer`. */
let transfers = 0;
export function newTransfer(): number {
  transfers += 1;
  return Date.now() * 1000 + (transfers % 1000);
}

/** Stops the transfer started with id `transfer`; false when it was done. */
export function cancelTransfer(transfer: number): Promise<boolean> {
  return call("cancel_transfer", { transfer });
}

/** Uploads a local file or folder into the folder `path` (with `unpack`, an archive's content). */
export function volumePut(env: string, name: string, path: string, source: string, unpack: boolean, transfer: number | null = null): Promise<Unpacked> {
  return call("volume_put", { env, name, path, source, unpack, transfer });
}

/** The tables of a SQLite file and how many rows each holds (read from the file, nothing run). */
export function volumeSqlite(env: string, name: string, path: string): Promise<SqliteInfo> {
  return call("volume_sqlite", { env, name, path });
}

/** Entries under the folder `path` whose names hold `text` (case ignored), nearest first. */
export function volumeSearch(env: string, name: string, path: string, text: string): Promise<Search> {
  return call("volume_search", { env, name, path, text });
}

/** What each volume takes on disk (the daemon's disk-usage API; cached unless `fresh`). */
export function volumeSizes(env: string, fresh: boolean): Promise<VolumeSizes> {
  return call("volume_sizes", { env, fresh });
}

/** Imports a .tar, .tar.gz or .zip file into volume `name` (created when missing; a non-empty one only with `replace`). */
export function volumeImport(env: string, file: string, name: string, replace: boolean): Promise<Unpacked> {
  return call("volume_import", { env, file, name, replace });
}

/** Exports the whole volume to `dest` (.tar.gz), pausing its writers while copying when `pause`. */
export function volumeExport(
  env: string,
  name: string,
  dest: string,
  replace: boolean,
  pause: boolean,
  onProgress: (bytes: number) => void,
  transfer: number | null = null,
): Promise<string> {
  const c = new Channel<number>();
  c.onmessage = onProgress;
  return call("volume_export", { env, name, dest, replace, pause, transfer, onProgress: c });
}

// ---- snapshots ----

function copyChannel(onProgress: (c: Copied) => void): Channel<Copied> {
  const c = new Channel<Copied>();
  c.onmessage = onProgress;
  return c;
}

/** The snapshots of a volume, newest first. */
export function volumeSnapshots(env: string, name: string): Promise<Snapshot[]> {
  return call("volume_snapshots", { env, name });
}

/** Takes a snapshot by hand, with an optional one-line note. */
export function volumeSnapshot(env: string, name: string, note: string, pause: boolean, onProgress: (c: Copied) => void): Promise<Snapshot> {
  return call("volume_snapshot", { env, name, note, pause, onProgress: copyChannel(onProgress) });
}

/** Copies a volume into the new volume `newName`. */
export function volumeClone(env: string, name: string, newName: string, pause: boolean, onProgress: (c: Copied) => void): Promise<Copied> {
  return call("volume_clone", { env, name, new: newName, pause, onProgress: copyChannel(onProgress) });
}

/** What changed from `snapshot` to `later` (another snapshot), or to the live volume when null. */
export function volumeDiff(env: string, name: string, snapshot: string, later: string | null): Promise<VolumeDiff> {
  return call("volume_diff", { env, name, snapshot, later });
}

/** The changed lines of the text file `path` from volume `before` to `after`. */
export function volumeTextDiff(env: string, before: string, after: string, path: string): Promise<TextDiff> {
  return call("volume_text_diff", { env, before, after, path });
}

/** The running containers a restore of the volume stops (for the confirmation). */
export function volumeRestoreStops(env: string, name: string): Promise<VolumeUser[]> {
  return call("volume_restore_stops", { env, name });
}

/** Puts `snapshot` back into the volume; its current content is snapshotted first. */
export function volumeRestore(env: string, name: string, snapshot: string, onProgress: (c: Copied) => void): Promise<Restored> {
  return call("volume_restore", { env, name, snapshot, onProgress: copyChannel(onProgress) });
}

/** Removes a volume or a snapshot (never one a container mounts). */
export function volumeRemove(env: string, name: string): Promise<void> {
  return call("volume_remove", { env, name });
}

/** The snapshots a rollback of STACK/SERVICE with its data would restore. */
export function rollbackSnapshots(env: string, service: string): Promise<Snapshot[]> {
  return call("rollback_snapshots", { env, service });
}

/** Rolls STACK/SERVICE back, then restores the data from before the deploy being undone. */
export function rollbackWithData(env: string, service: string, onEvent: (e: RolloutEvent) => void): Promise<RolloutOutcome> {
  return call("rollback_with_data", { env, service, onEvent: channel(onEvent) });
}

/** A repository's tags, from its registry and the environment's daemon. */
export function imageTags(env: string, repository: string): Promise<ImageTags> {
  return invoke<ImageTags>("image_tags", { env, repository }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Registries with credentials and where they come from. */
export function registryLogins(): Promise<RegistryLogin[]> {
  return invoke<RegistryLogin[]>("registry_logins").catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Logs in to a registry (checked first; the password goes to the OS keyring). */
export function registryLogin(host: string, username: string, password: string, ca: string | null): Promise<RegistryLogin> {
  return invoke<RegistryLogin>("registry_login", { host, username, password, ca }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

/** Forgets a login made in Changeover. */
export function registryLogout(host: string): Promise<void> {
  return invoke<void>("registry_logout", { host }).catch((e: unknown) => {
    throw toProblem(e);
  });
}

// ---- removing ----

/** What removing STACK/SERVICE would take away (nothing changes). */
export function serviceRemoval(env: string, service: string): Promise<import("./generated/Removal").Removal> {
  return call("service_removal", { env, service });
}

/** Removes STACK/SERVICE: its containers of every release, routes and record; its volumes stay. */
export function removeService(env: string, service: string): Promise<import("./generated/Removal").Removal> {
  return call("remove_service", { env, service });
}

/** What removing a stack would take away (nothing changes). */
export function stackRemoval(env: string, stack: string): Promise<import("./generated/StackRemoval").StackRemoval> {
  return call("stack_removal", { env, stack });
}

/** Removes a stack; its named volumes only with `volumes`. */
export function removeStack(env: string, stack: string, volumes: boolean): Promise<import("./generated/StackRemoval").StackRemoval> {
  return call("remove_stack", { env, stack, volumes });
}

// ---- plans ----

/** What deploying `tag` to STACK/SERVICE would change (nothing changes). */
export function deployPlan(env: string, service: string, tag: string, strategy: Strategy | null): Promise<import("./generated/ServicePlan").ServicePlan> {
  return call("deploy_plan", { env, service, tag, strategy });
}

/** What rolling STACK/SERVICE back would change (nothing changes). */
export function rollbackPlan(env: string, service: string): Promise<import("./generated/ServicePlan").ServicePlan> {
  return call("rollback_plan", { env, service });
}
