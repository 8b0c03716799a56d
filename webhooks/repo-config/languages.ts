/**
 * What archway knows of Travis's languages: the keys that expand the matrix for each (the
 * "version keys"), and the default install and script phases used when a config sets none.
 * Archway does not install language versions: a version key makes jobs and sets its
 * `TRAVIS_*_VERSION` variable, and the job runs with the toolchain its image has.
 */
export interface LanguageInfo {
  /** Canonical name (`node_js`, `cpp`, `objective-c`, ...). */
  name: string;
  /** Keys that expand the matrix for this language, the main one first. */
  versionKeys: readonly string[];
  /** Default `install` commands. None when absent. */
  install?: readonly string[];
  /**
   * Default `script` commands. `undefined`: archway knows no default, and a job without `script`
   * fails with a line that says so (as Travis does for python).
   */
  script?: readonly string[];
  /** True when Travis runs this language on macOS unless `os` says otherwise. */
  defaultOsx?: boolean;
}

// biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
const GEMFILE = '${BUNDLE_GEMFILE:-Gemfile}';
const MAKEFILE_TEST = '[ -f GNUmakefile ] || [ -f makefile ] || [ -f Makefile ] || [ -f BSDmakefile ]';

const JVM_INSTALL = [
  'if [ -f gradlew ]; then ./gradlew assemble; elif [ -f build.gradle ]; then gradle assemble; ' +
    'elif [ -f mvnw ]; then ./mvnw install -DskipTests=true -Dmaven.javadoc.skip=true -B -V; ' +
    'elif [ -f pom.xml ]; then mvn install -DskipTests=true -Dmaven.javadoc.skip=true -B -V; fi',
];
const JVM_SCRIPT = [
  'if [ -f gradlew ]; then ./gradlew check; elif [ -f build.gradle ]; then gradle check; ' +
    'elif [ -f mvnw ]; then ./mvnw test -B; elif [ -f pom.xml ]; then mvn test -B; else ant test; fi',
];

const LANGUAGES: readonly LanguageInfo[] = [
  {
    name: 'ruby',
    versionKeys: ['rvm', 'gemfile', 'jdk'],
    install: [`if [ -f "${GEMFILE}" ]; then bundle install --jobs=3 --retry=3; fi`],
    script: [`if [ -f "${GEMFILE}" ]; then bundle exec rake; else rake; fi`],
  },
  {
    name: 'python',
    versionKeys: ['python'],
    install: ['if [ -f requirements.txt ]; then pip install -r requirements.txt; fi'],
  },
  {
    name: 'node_js',
    versionKeys: ['node_js'],
    install: [
      'if [ -f yarn.lock ]; then yarn install; elif [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then npm ci; elif [ -f package.json ]; then npm install; fi',
    ],
    script: ['if [ -f yarn.lock ]; then yarn test; else npm test; fi'],
  },
  {
    name: 'go',
    versionKeys: ['go'],
    install: ['if [ ! -f go.mod ]; then go get -t -v ./...; fi'],
    script: [`if ${MAKEFILE_TEST}; then make; else go test -v ./...; fi`],
  },
  { name: 'rust', versionKeys: ['rust'], script: ['cargo build --verbose', 'cargo test --verbose'] },
  { name: 'c', versionKeys: [], script: ['./configure && make && make test'] },
  { name: 'cpp', versionKeys: [], script: ['./configure && make && make test'] },
  { name: 'java', versionKeys: ['jdk'], install: JVM_INSTALL, script: JVM_SCRIPT },
  { name: 'groovy', versionKeys: ['jdk'], install: JVM_INSTALL, script: JVM_SCRIPT },
  { name: 'android', versionKeys: ['jdk'], install: JVM_INSTALL, script: JVM_SCRIPT },
  { name: 'clojure', versionKeys: ['lein', 'jdk'], install: ['lein deps'], script: ['lein test'] },
  { name: 'scala', versionKeys: ['scala', 'jdk'], script: ['sbt ++$TRAVIS_SCALA_VERSION test'] },
  { name: 'php', versionKeys: ['php'], script: ['phpunit'] },
  {
    name: 'perl',
    versionKeys: ['perl'],
    install: ['cpanm --quiet --installdeps --notest .'],
    script: [
      'if [ -f Build.PL ]; then perl Build.PL && ./Build test; elif [ -f Makefile.PL ]; then perl Makefile.PL && make test; else make test; fi',
    ],
  },
  { name: 'perl6', versionKeys: ['perl6'] },
  {
    name: 'elixir',
    versionKeys: ['elixir', 'otp_release'],
    install: ['mix local.hex --force', 'mix local.rebar --force', 'mix deps.get'],
    script: ['mix test'],
  },
  { name: 'erlang', versionKeys: ['otp_release'] },
  { name: 'haskell', versionKeys: ['ghc'] },
  { name: 'crystal', versionKeys: ['crystal'], install: ['shards install'], script: ['crystal spec'] },
  { name: 'dart', versionKeys: ['dart', 'dart_task'] },
  { name: 'd', versionKeys: ['d'], script: ['dub test --compiler="$DC"'] },
  { name: 'julia', versionKeys: ['julia'] },
  { name: 'r', versionKeys: ['r'] },
  { name: 'elm', versionKeys: ['elm', 'node_js'] },
  { name: 'haxe', versionKeys: ['haxe'] },
  { name: 'csharp', versionKeys: ['dotnet', 'mono', 'solution'] },
  { name: 'nix', versionKeys: ['nix'] },
  { name: 'matlab', versionKeys: ['matlab'] },
  { name: 'smalltalk', versionKeys: ['smalltalk', 'smalltalk_config', 'smalltalk_vm'] },
  { name: 'hack', versionKeys: ['hhvm', 'php'] },
  {
    name: 'objective-c',
    versionKeys: ['rvm', 'gemfile', 'xcode_scheme', 'xcode_sdk'],
    defaultOsx: true,
  },
  { name: 'shell', versionKeys: [], install: [], script: [] },
  { name: 'minimal', versionKeys: [], install: [], script: [] },
  { name: 'generic', versionKeys: [], install: [], script: [] },
];

const LANGUAGE_ALIASES: Readonly<Record<string, string>> = {
  bash: 'shell',
  sh: 'shell',
  'c++': 'cpp',
  cplusplus: 'cpp',
  javascript: 'node_js',
  node: 'node_js',
  nodejs: 'node_js',
  golang: 'go',
  jvm: 'java',
  objective_c: 'objective-c',
  'obj-c': 'objective-c',
  objc: 'objective-c',
  swift: 'objective-c',
};

const BY_NAME = new Map(LANGUAGES.map((l) => [l.name, l]));

/** Travis's default language when a config names none. */
export const DEFAULT_LANGUAGE = 'ruby';

/** The canonical name of a language (`c++` -> `cpp`, `bash` -> `shell`), lower case. */
export function canonicalLanguage(name: string): string {
  const n = name.trim().toLowerCase();
  return LANGUAGE_ALIASES[n] ?? n;
}

/** What archway knows of a language, or undefined for one it does not know. */
export function languageInfo(name: string): LanguageInfo | undefined {
  return BY_NAME.get(canonicalLanguage(name));
}

/** Every language's version keys, in a stable order: the order in which they expand the matrix. */
export const VERSION_KEYS: readonly string[] = [...new Set(LANGUAGES.flatMap((l) => l.versionKeys))];

/** Other names Travis accepts for version keys. */
export const VERSION_KEY_ALIASES: Readonly<Record<string, string>> = {
  ruby: 'rvm',
  rbenv: 'rvm',
  gemfiles: 'gemfile',
};

/** The languages whose jobs `compiler` expands. */
export const COMPILER_LANGUAGES: readonly string[] = ['c', 'cpp'];

/** The variable a version key sets in the job (Travis's names where Travis has one). */
export function versionVariable(key: string): string {
  switch (key) {
    case 'node_js':
      return 'TRAVIS_NODE_VERSION';
    case 'rvm':
      return 'TRAVIS_RUBY_VERSION';
    case 'otp_release':
      return 'TRAVIS_OTP_RELEASE';
    case 'ghc':
      return 'TRAVIS_HASKELL_VERSION';
    case 'gemfile':
      return 'BUNDLE_GEMFILE';
    default:
      return `TRAVIS_${key.toUpperCase()}_VERSION`;
  }
}

/** Language options Travis uses to set up a toolchain; archway reads them but does not apply them. */
export const LANGUAGE_OPTION_KEYS: readonly string[] = [
  'bundler_args',
  'virtualenv',
  'virtual_env',
  'gobuild_args',
  'go_import_path',
  'npm_args',
  'composer_args',
  'sbt_args',
  'cabal',
  'elm_format',
  'elm_test',
  'hxml',
  'neko',
  'podfile',
  'xcode_project',
  'xcode_workspace',
  'xcode_destination',
  'xctool_args',
  'android',
  'r_packages',
  'r_binary_packages',
  'r_github_packages',
  'bioc_packages',
  'brew_packages',
  'apt_packages',
  'cran',
  'repos',
  'warnings_are_errors',
  'r_check_args',
  'r_build_args',
  'r_check_revdep',
  'pandoc',
  'pandoc_version',
  'latex',
  'fortran',
  'use_bioc',
  'bioc_required',
  'bioc_check',
  'smalltalk_edge',
  'with_content_shell',
  'julia_project',
];

/** How a job finds out which version of a language its image has. */
export interface VersionProbe {
  /** The command the language's jobs run (`python3`). */
  command: string;
  /** A shell command that prints the version (its first number is compared). */
  print: string;
}

/**
 * Version keys archway can check against the image, at run time (the job's log header) and in
 * `config expand` (for images whose recipe says what they provide). Archway installs no language
 * versions: a value the image does not have is a warning, never a silent pass.
 */
export const VERSION_PROBES: Readonly<Record<string, VersionProbe>> = {
  python: { command: 'python3', print: 'python3 --version 2>&1' },
  node_js: { command: 'node', print: 'node --version 2>&1' },
  rvm: { command: 'ruby', print: 'ruby --version 2>&1' },
  go: { command: 'go', print: 'go version 2>&1' },
  rust: { command: 'rustc', print: 'rustc --version 2>&1' },
  php: { command: 'php', print: 'php --version 2>&1' },
  perl: { command: 'perl', print: `perl -e 'print "$^V\\n"' 2>&1` },
  jdk: { command: 'java', print: 'java -version 2>&1' },
};

/** Whether a version a config asks for is one archway can compare: digits and dots (`3.10`, `18`). */
export function isPlainVersion(v: string): boolean {
  return /^\d+(\.\d+)*$/.test(v.trim());
}

/** Whether `have` (`3.11.2`) is a version `want` (`3`, `3.11`, `3.11.2`) names. */
export function versionMatches(want: string, have: string): boolean {
  return `${have}.`.startsWith(`${want.trim()}.`);
}
