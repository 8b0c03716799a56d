import { shellQuote } from '../../src/core/index.ts';
import type { AptAddon } from './apt-addon.ts';
import type { Phase } from './config-schema.ts';
import type { EnvVar } from './env-vars.ts';
import type { BuildEvent, ExpandedJob } from './expand-matrix.ts';
import { VERSION_PROBES, versionVariable } from './languages.ts';

/**
 * The exit code of a job's script: 0 passed; 1 failed (a `script` command failed); 2 errored
 * (a `before_install`, `install` or `before_script` command failed, or the build directory is
 * missing). Any other code comes from a command that ended the shell itself (`exit 5`,
 * `travis_terminate 5`).
 */
export const JOB_EXIT = { passed: 0, failed: 1, errored: 2 } as const;

/** What the script of one job needs to know besides the job: the event, and where it runs. */
export interface JobScriptContext {
  event: BuildEvent;
  /** archway's id of the job: `TRAVIS_JOB_ID`. */
  jobId: string;
  /** `TRAVIS_BUILD_NUMBER`. Default: the first part of the job's number. */
  buildNumber?: string | number;
  /** `TRAVIS_BUILD_ID`. Default: the build number. */
  buildId?: string;
  /** Where the source is; the script starts there (`TRAVIS_BUILD_DIR`). Default `/root/build/<owner>/<name>`. */
  buildDir?: string;
  /**
   * `TRAVIS_SECURE_ENV_VARS`: whether the job's secure variables are set. Default false: archway
   * does not decrypt Travis secure values.
   */
  secureEnvAvailable?: boolean;
  /**
   * Travis runs job scripts in bash, and real configs use bash (`[[ ]]`, `source`, `<(...)`).
   * When true (the default), the script re-runs itself under bash where the image has bash, and
   * runs as POSIX sh where it has not (busybox). False: POSIX sh only, in whatever shell runs it.
   */
  preferBash?: boolean;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** The build directory a job's script starts in when the context names none. */
export function defaultBuildDir(repo: string | undefined): string {
  return repo ? `/root/build/${repo}` : '/root/build';
}

/** `CC` and `CXX` as Travis sets them for a c or cpp job (`gcc-9` -> `gcc-9` / `g++-9`). */
export function compilerVars(language: string, compiler: string): [string, string][] {
  const c = compiler.toLowerCase();
  let cc = compiler;
  let cxx = 'g++';
  if (c.startsWith('clang++')) {
    cxx = compiler;
    cc = compiler.replace(/clang\+\+/i, 'clang');
  } else if (c.startsWith('clang')) {
    cxx = compiler.replace(/clang/i, 'clang++');
  } else if (c.startsWith('g++')) {
    cxx = compiler;
    cc = compiler.replace(/g\+\+/i, 'gcc');
  } else if (c.startsWith('gcc')) {
    cxx = compiler.replace(/gcc/i, 'g++');
  }
  const vars: [string, string][] = [
    ['TRAVIS_COMPILER', compiler],
    ['CC', cc],
    ['CC_FOR_BUILD', cc],
  ];
  if (language === 'cpp') vars.push(['CXX', cxx], ['CXX_FOR_BUILD', cxx]);
  return vars;
}

/** The distribution a job runs: the suite of a `debian-<suite>...` image, else what `dist:` says. */
function distOf(job: ExpandedJob): string {
  const m = /^debian-([a-z]+)/.exec(job.image);
  return m?.[1] ?? job.dist ?? '';
}

/**
 * The `TRAVIS_*` variables (and the few others Travis sets, such as `CI`) of a job for an event,
 * in the order they are exported. Values are literal.
 */
export function travisEnv(job: ExpandedJob, ctx: JobScriptContext): [string, string][] {
  const e = ctx.event;
  const pr = e.type === 'pull_request';
  const buildNumber = String(ctx.buildNumber ?? job.number.split('.')[0] ?? '1');
  const buildDir = ctx.buildDir ?? defaultBuildDir(e.repo);
  const vars: [string, string][] = [
    ['CI', 'true'],
    ['CONTINUOUS_INTEGRATION', 'true'],
    ['TRAVIS', 'true'],
    ['HAS_JOSH_K_SEAL_OF_APPROVAL', 'true'],
    ['DEBIAN_FRONTEND', 'noninteractive'],
    ['RAILS_ENV', 'test'],
    ['RACK_ENV', 'test'],
    ['MERB_ENV', 'test'],
    ['TRAVIS_OS_NAME', job.os],
    ['TRAVIS_CPU_ARCH', job.arch],
    ['TRAVIS_DIST', distOf(job)],
    ['TRAVIS_LANGUAGE', job.language],
    ['TRAVIS_EVENT_TYPE', e.type],
    ['TRAVIS_REPO_SLUG', e.repo ?? ''],
    ['TRAVIS_BRANCH', e.branch ?? e.tag ?? ''],
    ['TRAVIS_TAG', e.tag ?? ''],
    ['TRAVIS_COMMIT', e.commit ?? ''],
    ['TRAVIS_COMMIT_MESSAGE', e.commitMessage ?? ''],
    ['TRAVIS_PULL_REQUEST', pr && e.pullRequest !== undefined ? String(e.pullRequest) : 'false'],
    ['TRAVIS_PULL_REQUEST_BRANCH', pr ? (e.headBranch ?? '') : ''],
    ['TRAVIS_PULL_REQUEST_SHA', pr ? (e.headSha ?? '') : ''],
    ['TRAVIS_PULL_REQUEST_SLUG', pr ? (e.headRepo ?? '') : ''],
    ['TRAVIS_BUILD_DIR', buildDir],
    ['TRAVIS_BUILD_NUMBER', buildNumber],
    ['TRAVIS_BUILD_ID', ctx.buildId ?? buildNumber],
    ['TRAVIS_JOB_ID', ctx.jobId],
    ['TRAVIS_JOB_NUMBER', job.number],
    ['TRAVIS_JOB_NAME', job.name ?? ''],
    ['TRAVIS_BUILD_STAGE_NAME', capitalize(job.stage)],
    ['TRAVIS_ALLOW_FAILURE', String(job.allowFailure)],
    ['TRAVIS_SECURE_ENV_VARS', String(ctx.secureEnvAvailable === true && job.envVars.some((v) => v.secure))],
    ['TRAVIS_SUDO', 'true'],
    // Travis's pip installed where the job asked. Debian's refuses system-wide installs (PEP 668,
    // "externally-managed-environment"); a job's container is thrown away after it, so let it.
    ['PIP_BREAK_SYSTEM_PACKAGES', '1'],
  ];
  for (const [key, value] of Object.entries(job.versions)) {
    vars.push([versionVariable(key), key === 'gemfile' ? `${buildDir}/${value}` : value]);
  }
  if (job.language === 'c' || job.language === 'cpp')
    vars.push(...compilerVars(job.language, job.compiler ?? 'gcc'));
  return vars;
}

/**
 * Shell functions every job script has: Travis's `travis_retry`, `travis_wait`,
 * `travis_terminate` and `travis_fold`, and archway's own (prefixed `archway_`). POSIX sh:
 * they run in dash, busybox sh and bash alike, also under `set -u`. (Written raw; `@{` stands
 * for the shell's `${`, which a template literal would take for its own.)
 */
export const SCRIPT_FUNCTIONS = String.raw`ANSI_RED='\033[31;1m'
ANSI_GREEN='\033[32;1m'
ANSI_YELLOW='\033[33;1m'
ANSI_RESET='\033[0m'
ANSI_CLEAR='\033[0K'
_archway_cmd=''
_archway_status=0
_archway_wait_n=0
TRAVIS_TEST_RESULT=0

# Nanoseconds since the epoch (seconds * 10^9 where date has no %N, as in busybox).
archway_now() {
  _archway_ns=$(date +%s%N 2>/dev/null)
  case "$_archway_ns" in
    '' | *[!0-9]*) _archway_ns="$(date +%s)000000000" ;;
  esac
  printf '%s' "$_archway_ns"
}

archway_fold_start() {
  _archway_fold=$1
  _archway_timer=$2
  printf 'travis_fold:start:%s\n' "$1"
  _archway_timer_start=$(archway_now)
  printf 'travis_time:start:%s\n' "$2"
}

archway_fold_end() {
  _archway_timer_end=$(archway_now)
  printf 'travis_time:end:%s:start=%s,finish=%s,duration=%s\n' "$_archway_timer" "$_archway_timer_start" \
    "$_archway_timer_end" "$((_archway_timer_end - _archway_timer_start))"
  printf 'travis_fold:end:%s\n' "$_archway_fold"
}

# Runs $_archway_cmd in this shell (a cd or an export holds for the next command) and sets
# $_archway_status. A command that does not parse fails with 2 instead of ending the shell.
archway_run() {
  printf '%b$ %s%b\n' "$ANSI_YELLOW" "$_archway_cmd" "$ANSI_RESET"
  if (eval "_archway_parse() {
:
$_archway_cmd
}") 2>/dev/null; then
    eval "$_archway_cmd"
    _archway_status=$?
  else
    (eval "_archway_parse() {
:
$_archway_cmd
}")
    _archway_status=2
  fi
}

# A command of before_install, install or before_script failed: the job is errored.
archway_assert() {
  if [ "$1" -ne 0 ]; then
    archway_fold_end
    printf '\n%bThe command "%s" failed and exited with %s during %s.%b\n\nYour build has been stopped.\n' \
      "$ANSI_RED" "$_archway_cmd" "$1" "$2" "$ANSI_RESET"
    exit 2
  fi
}

# A command of script ran: every one runs, and the job fails if any failed.
archway_result() {
  if [ "$1" -eq 0 ]; then
    printf '\n%bThe command "%s" exited with %s.%b\n' "$ANSI_GREEN" "$_archway_cmd" "$1" "$ANSI_RESET"
  else
    TRAVIS_TEST_RESULT=1
    printf '\n%bThe command "%s" exited with %s.%b\n' "$ANSI_RED" "$_archway_cmd" "$1" "$ANSI_RESET"
  fi
  export TRAVIS_TEST_RESULT
}

travis_fold() {
  printf 'travis_fold:%s:%s\n' "$1" "$2"
}

travis_retry() {
  _archway_retry_result=0
  _archway_retry_count=1
  while [ "$_archway_retry_count" -le 3 ]; do
    if [ "$_archway_retry_result" -ne 0 ]; then
      printf '\n%bThe command "%s" failed. Retrying, %s of 3.%b\n\n' "$ANSI_RED" "$*" "$_archway_retry_count" \
        "$ANSI_RESET" >&2
    fi
    "$@"
    _archway_retry_result=$?
    if [ "$_archway_retry_result" -eq 0 ]; then break; fi
    _archway_retry_count=$((_archway_retry_count + 1))
    sleep 1
  done
  if [ "$_archway_retry_count" -gt 3 ]; then
    printf '\n%bThe command "%s" failed 3 times.%b\n\n' "$ANSI_RED" "$*" "$ANSI_RESET" >&2
  fi
  return "$_archway_retry_result"
}

# Prints a line every minute while a quiet command runs, and kills it after its time.
archway_jigger() {
  _archway_jig_count=0
  while [ "$_archway_jig_count" -lt "$2" ]; do
    _archway_jig_count=$((_archway_jig_count + 1))
    printf 'Still running (%s of %s): %s\n' "$_archway_jig_count" "$2" "$3"
    sleep 60 </dev/null >/dev/null 2>&1
  done
  printf '\n%bTimeout (%s minutes) reached. Terminating "%s"%b\n\n' "$ANSI_RED" "$2" "$3" "$ANSI_RESET"
  kill -9 "$1" 2>/dev/null
}

travis_wait() {
  _archway_wait_minutes=20
  case "$1" in
    '' | *[!0-9]*) ;;
    *)
      _archway_wait_minutes=$1
      shift
      ;;
  esac
  _archway_wait_n=$((_archway_wait_n + 1))
  _archway_wait_log="@{TMPDIR:-/tmp}/travis_wait_$$_$_archway_wait_n.log"
  "$@" >"$_archway_wait_log" 2>&1 &
  _archway_wait_pid=$!
  archway_jigger "$_archway_wait_pid" "$_archway_wait_minutes" "$*" &
  _archway_wait_jigger=$!
  wait "$_archway_wait_pid"
  _archway_wait_result=$?
  kill "$_archway_wait_jigger" 2>/dev/null
  wait "$_archway_wait_jigger" 2>/dev/null
  if [ "$_archway_wait_result" -eq 0 ]; then
    printf '\n%bThe command %s exited with %s.%b\n' "$ANSI_GREEN" "$*" "$_archway_wait_result" "$ANSI_RESET"
  else
    printf '\n%bThe command %s exited with %s.%b\n' "$ANSI_RED" "$*" "$_archway_wait_result" "$ANSI_RESET"
  fi
  printf '\n%bLog:%b\n\n' "$ANSI_GREEN" "$ANSI_RESET"
  cat "$_archway_wait_log"
  rm -f "$_archway_wait_log"
  return "$_archway_wait_result"
}

# archway's own notes in the log: a warning (the job goes on) or an error.
archway_warn() {
  printf '%b[archway] warning: %s%b\n' "$ANSI_YELLOW" "$1" "$ANSI_RESET"
}

# Warns when the image's version of a language is not the one asked for: archway installs none.
# $1 the version key, $2 the version asked for, $3 its command, $4 what prints its version.
archway_check_version() {
  if ! command -v "$3" >/dev/null 2>&1; then
    archway_warn "$1 $2 was asked for, but this image has no $3: archway does not install language versions"
    return 0
  fi
  _archway_have=$(eval "$4" | sed -n 's/^[^0-9]*\([0-9][0-9.]*\).*/\1/p' | head -n 1)
  _archway_have=@{_archway_have%.}
  case "$2" in
    '' | *[!0-9.]*)
      archway_warn "$1 $2 was asked for: archway does not install language versions; this image has $3 $_archway_have"
      return 0
      ;;
  esac
  case "$_archway_have." in
    "$2".*) ;;
    *) archway_warn "$1 $2 was asked for, but this image has $3 $_archway_have: archway does not install language versions" ;;
  esac
}

# Warns when the compiler in $1 (CC or CXX) is not in the image and addons.apt ($2) does not
# install it. Its last word counts (CC="ccache gcc" is gcc).
archway_check_compiler() {
  eval "_archway_compiler=\$$1"
  _archway_compiler=@{_archway_compiler##* }
  case " $2 " in
    *" $_archway_compiler "*) return 0 ;;
  esac
  if ! command -v "$_archway_compiler" >/dev/null 2>&1; then
    archway_warn "compiler: $_archway_compiler ($1) is not in this image: the job errors when it is announced"
  fi
}

# Prints a compiler's version as Travis's header does; a compiler the image lacks errors the job.
# $1 the variable (CC or CXX).
archway_announce_compiler() {
  eval "_archway_compiler=\$$1"
  _archway_cmd="$_archway_compiler --version"
  printf '%b$ %s%b\n' "$ANSI_YELLOW" "$_archway_cmd" "$ANSI_RESET"
  _archway_compiler=@{_archway_compiler##* }
  if ! command -v "$_archway_compiler" >/dev/null 2>&1; then
    printf '%b[archway] error: compiler: %s (%s) is not in this image; use a compiler the image has, or an image with it (image: in the config)%b\n' \
      "$ANSI_RED" "$_archway_compiler" "$1" "$ANSI_RESET"
    exit 2
  fi
  "$_archway_compiler" --version 2>&1 | head -n 1
}

# Packages apt cannot install from the sources it has: printed after a failed install.
archway_apt_missing() {
  _archway_missing=''
  for _archway_p in "$@"; do
    _archway_name=@{_archway_p%%=*}
    _archway_name=@{_archway_name%%/*}
    if ! apt-cache show --no-all-versions -- "$_archway_name" >/dev/null 2>&1; then
      _archway_missing="$_archway_missing $_archway_p"
    fi
  done
  if [ -n "$_archway_missing" ]; then
    printf '\n%baddons.apt: no such package in the apt sources of this image:%s%b\n' "$ANSI_RED" "$_archway_missing" "$ANSI_RESET"
  fi
}

# Fetches an apt source's key ($2) into /etc/apt/trusted.gpg.d as archway-addons-$1.asc or .gpg.
archway_apt_key() {
  _archway_key=$(mktemp) || return 1
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL -o "$_archway_key" "$2"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$_archway_key" "$2"
  else
    /usr/lib/apt/apt-helper download-file "$2" "$_archway_key"
  fi || {
    rm -f "$_archway_key"
    return 1
  }
  if grep -q 'BEGIN PGP PUBLIC KEY BLOCK' "$_archway_key"; then _archway_key_ext=asc; else _archway_key_ext=gpg; fi
  sudo install -m 0644 "$_archway_key" "/etc/apt/trusted.gpg.d/archway-addons-$1.$_archway_key_ext"
  _archway_key_status=$?
  rm -f "$_archway_key"
  return "$_archway_key_status"
}

# Ends the job now with the given code (default: the last command's).
travis_terminate() {
  _archway_terminate_code=$?
  if [ "$#" -gt 0 ]; then exit "$1"; fi
  exit "$_archway_terminate_code"
}
`.replaceAll('@{', '${');

/** How each phase's commands are run. */
const PHASE_MODE: Record<Phase, 'assert' | 'result' | 'ignore'> = {
  before_install: 'assert',
  install: 'assert',
  before_script: 'assert',
  script: 'result',
  after_success: 'ignore',
  after_failure: 'ignore',
  after_script: 'ignore',
};

function phaseBlock(phase: Phase, commands: readonly string[], timer: () => string): string[] {
  if (commands.length === 0) return [];
  const lines = [`archway_fold_start ${phase} ${timer()}`];
  for (const cmd of commands) {
    lines.push(`_archway_cmd=${shellQuote(cmd)}`, 'archway_run');
    const mode = PHASE_MODE[phase];
    if (mode === 'assert') lines.push(`archway_assert "$_archway_status" ${phase}`);
    else if (mode === 'result') lines.push('archway_result "$_archway_status"');
  }
  lines.push('archway_fold_end');
  return lines;
}

/**
 * The log's header, after the variables: a language version or a compiler the image does not
 * have is a warning here, before any phase (archway installs no language versions).
 */
function headerLines(job: ExpandedJob): string[] {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(job.versions)) {
    const probe = VERSION_PROBES[key];
    if (probe === undefined) continue;
    lines.push(`archway_check_version ${[key, value, probe.command, probe.print].map(shellQuote).join(' ')}`);
  }
  if (job.language === 'c' || job.language === 'cpp') {
    const vars = job.language === 'cpp' ? ['CC', 'CXX'] : ['CC'];
    const fromApt = job.apt?.packages ?? [];
    for (const v of vars) lines.push(`archway_check_compiler ${v} ${shellQuote(fromApt.join(' '))}`);
  }
  return lines;
}

/**
 * `$CC --version` (and `$CXX --version` for cpp), as Travis's header prints them, after addons.apt
 * and before before_install: a compiler the image does not have errors the job (exit 2) there,
 * instead of passing through a `$CC --version | head -1` in the user's script.
 */
function announceLines(job: ExpandedJob): string[] {
  if (job.language === 'c') return ['archway_announce_compiler CC'];
  if (job.language === 'cpp') return ['archway_announce_compiler CC', 'archway_announce_compiler CXX'];
  return [];
}

/** What addons.apt makes the job do before before_install, as Travis's apt add-on did. */
function aptBlock(apt: AptAddon | undefined, timer: () => string): string[] {
  if (apt === undefined) return [];
  // Checked against PACKAGE in apt-addon.ts: plain words, nothing the shell expands.
  const pkgs = apt.packages.join(' ');
  const what = apt.packages.length > 0 ? `install ${apt.packages.join(' ')}` : 'run apt-get update';
  const noNetwork =
    `addons.apt: this job has no network (network: none), so apt cannot ${what}. ` +
    'Jobs made from a repository config get network egress unless the operator of this archway ' +
    'installation has turned egress off: ask them, or use an image that already has the packages (image: in the config).';
  const step = (cmd: string) => [
    `_archway_cmd=${shellQuote(cmd)}`,
    'archway_run',
    'archway_assert "$_archway_status" addons.apt',
  ];
  const lines = [
    `archway_fold_start apt ${timer()}`,
    `printf '%bInstalling APT Packages%b\\n' "$ANSI_YELLOW" "$ANSI_RESET"`,
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
    'if [ "${ARCHWAY_NETWORK:-}" = none ]; then',
    `  printf '%b%s%b\\n' "$ANSI_RED" ${shellQuote(noNetwork)} "$ANSI_RESET"`,
    '  archway_fold_end',
    '  exit 2',
    'fi',
    'for _archway_need in apt-get sudo; do',
    '  if ! command -v "$_archway_need" >/dev/null 2>&1; then',
    `    printf '%baddons.apt: this image has no %s; addons.apt needs a Debian image with apt-get and sudo%b\\n' "$ANSI_RED" "$_archway_need" "$ANSI_RESET"`,
    '    archway_fold_end',
    '    exit 2',
    '  fi',
    'done',
  ];
  apt.sources.forEach((source, i) => {
    if (source.keyUrl !== undefined)
      lines.push(...step(`archway_apt_key ${i + 1} ${shellQuote(source.keyUrl)}`));
    lines.push(
      ...step(
        `printf '%s\\n' ${shellQuote(source.sourceline)} | sudo tee -a /etc/apt/sources.list.d/archway-addons.list >/dev/null`,
      ),
    );
  });
  // Error-Mode=any (apt >= 2.3): a source that fails to update fails the step, not a warning and exit 0.
  lines.push(...step('sudo -E apt-get -yq -o APT::Update::Error-Mode=any update'));
  if (apt.packages.length > 0) {
    lines.push(
      `_archway_cmd=${shellQuote(`sudo -E apt-get -yq --no-install-suggests --no-install-recommends install ${pkgs}`)}`,
      'archway_run',
      `if [ "$_archway_status" -ne 0 ]; then archway_apt_missing ${pkgs}; fi`,
      'archway_assert "$_archway_status" addons.apt',
    );
  }
  lines.push('archway_fold_end');
  return lines;
}

function envLines(vars: readonly EnvVar[]): string[] {
  if (vars.length === 0) return [];
  const lines = [`printf '\\nSetting environment variables from the config\\n'`];
  for (const v of vars) {
    if (v.secure) {
      const shown = v.name === undefined ? `[secure:${v.id}]` : `${v.name}=[secure:${v.id}]`;
      lines.push(
        `printf '%s\\n' ${shellQuote(`# ${shown}: a secure variable; archway does not decrypt Travis secure values`)}`,
      );
      continue;
    }
    // The value is shell text, exported as written (quotes and $VARS work as in Travis).
    lines.push(
      `printf '$ export %s\\n' ${shellQuote(`${v.name}=${v.value}`)}`,
      `export ${v.name}=${v.value}`,
    );
  }
  return lines;
}

/**
 * The shell script of one job: one shell session that runs its phases in Travis's order and with
 * Travis's rules. `before_install`, `install` and `before_script` stop at the first failing
 * command (exit 2, errored); every `script` command runs, and the job fails (exit 1) if any did;
 * `after_success` or `after_failure`, then `after_script`, run without changing the result. Each
 * phase is a fold (`travis_fold:start:install` ... `travis_fold:end:install`) with a
 * `travis_time:end:...,duration=<ns>` line. Run it with `/bin/sh -c SCRIPT`: it moves to bash
 * where the image has it (see `preferBash`).
 */
export function buildJobScript(job: ExpandedJob, ctx: JobScriptContext): string {
  const env = travisEnv(job, ctx);
  let timer = 0;
  const nextTimer = () => (++timer).toString(16).padStart(8, '0');
  const lines: string[] = [
    `# archway job ${job.number} (stage ${job.stage}, ${job.arch}): one shell session for all phases`,
    SCRIPT_FUNCTIONS,
    ...env.map(([k, v]) => `export ${k}=${shellQuote(v)}`),
    'export TRAVIS_HOME="$HOME"',
    ...envLines(job.envVars),
    ...headerLines(job),
    `cd -- "$TRAVIS_BUILD_DIR" || { printf '%bThe build directory %s does not exist.%b\\n' "$ANSI_RED" "$TRAVIS_BUILD_DIR" "$ANSI_RESET"; exit 2; }`,
    ...aptBlock(job.apt, nextTimer),
    ...announceLines(job),
    ...phaseBlock('before_install', job.phases.before_install, nextTimer),
    ...phaseBlock('install', job.phases.install, nextTimer),
    ...phaseBlock('before_script', job.phases.before_script, nextTimer),
    'TRAVIS_TEST_RESULT=0',
    'export TRAVIS_TEST_RESULT',
    ...phaseBlock('script', job.phases.script, nextTimer),
    // after_* never change the result, whatever the shell options a command set.
    'set +e',
  ];
  const success = phaseBlock('after_success', job.phases.after_success, nextTimer);
  const failure = phaseBlock('after_failure', job.phases.after_failure, nextTimer);
  if (success.length > 0 || failure.length > 0) {
    lines.push(
      'if [ "$TRAVIS_TEST_RESULT" = 0 ]; then',
      ...(success.length > 0 ? success : [':']),
      'else',
      ...(failure.length > 0 ? failure : [':']),
      'fi',
    );
  }
  lines.push(
    ...phaseBlock('after_script', job.phases.after_script, nextTimer),
    `printf '\\nDone. Your build exited with %s.\\n' "$TRAVIS_TEST_RESULT"`,
    'exit "$TRAVIS_TEST_RESULT"',
  );
  const body = `${lines.join('\n')}\n`;
  if (ctx.preferBash === false) return body;
  return [
    '# Travis runs jobs in bash: so does archway where the image has bash; elsewhere this runs as POSIX sh.',
    // The worker runs the script from its file: bash re-reads that file (never argv, which the kernel caps at 128 KiB).
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax
    'if [ -z "${BASH_VERSION:-}" ] && [ -f "$0" ] && command -v bash >/dev/null 2>&1; then exec bash "$0"; fi',
    body,
  ].join('\n');
}
