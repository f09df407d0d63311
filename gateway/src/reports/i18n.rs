//! Every text of the township pages in Simplified Chinese (the default) and English, in
//! one place: the labels ([`T`], [`t`]) and the names of report statuses, exam kinds,
//! report fields, outbox lanes and quarantine sources ([`term`]). Nothing else in the
//! pages spells a word in either language.

/// The page language.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lang {
    /// Simplified Chinese (the default).
    #[default]
    Zh,
    /// English.
    En,
}

impl Lang {
    /// From a `lang` query parameter or cookie value (`zh`, `zh-CN`, `en`, ...).
    pub fn parse(value: &str) -> Option<Lang> {
        let v = value.trim().to_ascii_lowercase();
        if v == "en" || v.starts_with("en-") {
            Some(Lang::En)
        } else if v == "zh" || v.starts_with("zh-") {
            Some(Lang::Zh)
        } else {
            None
        }
    }

    /// The value of the `lang` parameter and cookie.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The HTML `lang` attribute.
    pub fn html(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The other language (the switch offers it).
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }
}

/// A label of the pages.
#[allow(missing_docs)] // each variant is spelled out in `t`, which is its documentation
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T {
    PageTitle,
    LanguageName,
    Updated,
    Stale,
    BeijingTime,
    InternalOnly,
    AlertsHeading,
    AlertsNone,
    AlertsWaiting,
    AlertsAcknowledged,
    AlertsWithdrawn,
    WithdrawnReason,
    AckName,
    AckButton,
    AckBy,
    RelayedToCounty,
    NotRelayedYet,
    OutboxHeading,
    Waiting,
    OfWhichUrgent,
    Sent,
    Rejected,
    OldestWaiting,
    Age,
    Attempts,
    LastError,
    NoErrors,
    NothingWaiting,
    RecentSent,
    NothingSent,
    RejectedItems,
    NothingRejected,
    Reason,
    Source,
    Study,
    Message,
    File,
    Instances,
    Read,
    NotReadYet,
    AwaitingCompletion,
    LastContact,
    Never,
    FeedError,
    ReportsHeading,
    NoReports,
    ShowingNewest,
    Critical,
    CriticalWaiting,
    Patient,
    Exam,
    Accession,
    Report,
    Version,
    Signer,
    SignedAt,
    ReceivedAt,
    Verification,
    Actions,
    View,
    SignatureValid,
    SignatureInvalid,
    OtherVersionsInvalid,
    BackToList,
    ReportTitle,
    NoVerifiedVersion,
    CurrentVersion,
    AllVersions,
    ReportStatus,
    AmendReason,
    CriticalAck,
    PrintPdf,
    PdfNotYet,
    PdfNotFetched,
    PdfNotOffered,
    PreliminaryBy,
    PatientName,
    PatientId,
    ExamType,
    StudyUid,
    CriticalBanner,
    NotFoundTitle,
    NotFoundReport,
    NotFoundVersion,
    InternalError,
    DbReadFailed,
    PdfUnreadable,
    PrintRefused,
    PrintRefusedText,
    PdfNotYetTitle,
    PdfRetryText,
    RequestRefused,
    CrossSite,
    NameRequired,
    NameRequiredText,
    NotSaved,
    NotSavedText,
    CannotAcknowledge,
    NotVerifiedText,
    NotCriticalText,
    SupersededText,
}

/// The label in `lang`. One row per label: Chinese, English.
pub fn t(lang: Lang, key: T) -> &'static str {
    let (zh, en) = match key {
        T::PageTitle => ("乡镇工作站 · 发送与报告", "Township gateway · sent and reported"),
        T::LanguageName => ("中文", "English"),
        T::Updated => ("更新于", "Updated"),
        T::Stale => (
            "页面未能自动刷新，请检查与工作站的连接。",
            "The page could not refresh itself; check the connection to the gateway.",
        ),
        T::BeijingTime => ("时间均为北京时间。", "Times are Beijing time (UTC+8)."),
        T::InternalOnly => (
            "本页面无登录，仅供本院内网使用。",
            "This page has no login: for the hospital's internal network only.",
        ),
        T::AlertsHeading => ("危急值", "Critical results"),
        T::AlertsNone => ("没有等待确认的危急值。", "No critical result awaits acknowledgement."),
        T::AlertsWaiting => ("份危急值等待临床医生确认", "critical result(s) await a clinician's acknowledgement"),
        T::AlertsAcknowledged => ("最近已确认", "Recently acknowledged"),
        T::AlertsWithdrawn => (
            "已撤回的危急值（检验科/报告医生更正，请勿按原值处理）",
            "Withdrawn critical results (corrected at the county: do not act on the earlier value)",
        ),
        T::WithdrawnReason => ("撤回原因", "Why withdrawn"),
        T::AckName => ("临床医生姓名", "Clinician's name"),
        T::AckButton => ("确认已知悉", "Acknowledge"),
        T::AckBy => ("确认人", "Acknowledged by"),
        T::RelayedToCounty => ("已通知县级平台", "county notified"),
        T::NotRelayedYet => ("尚未通知县级平台（自动重试中）", "county not notified yet (retrying)"),
        T::OutboxHeading => ("发送队列", "Outbox"),
        T::Waiting => ("等待发送", "Waiting"),
        T::OfWhichUrgent => ("其中急诊", "of which urgent"),
        T::Sent => ("已发送", "Sent"),
        T::Rejected => ("被拒收", "Rejected"),
        T::OldestWaiting => ("等待最久", "Oldest waiting"),
        T::Age => ("已等待", "waiting for"),
        T::Attempts => ("次失败尝试", "failed attempts"),
        T::LastError => ("最近发送错误", "Last delivery error"),
        T::NoErrors => ("无发送错误", "No delivery error"),
        T::NothingWaiting => ("无等待项", "Nothing waiting"),
        T::RecentSent => ("最近发送", "Recently sent"),
        T::NothingSent => ("尚无已发送项", "Nothing sent yet"),
        T::RejectedItems => ("被拒收项（隔离区）", "Rejected items (quarantine)"),
        T::NothingRejected => ("无被拒收项", "Nothing rejected"),
        T::Reason => ("原因", "Reason"),
        T::Source => ("环节", "Where"),
        T::Study => ("检查", "Study"),
        T::Message => ("消息", "Message"),
        T::File => ("文件", "File"),
        T::Instances => ("幅", "instances"),
        T::Read => ("已出报告", "Reported"),
        T::NotReadYet => ("待阅片", "Not read yet"),
        T::AwaitingCompletion => ("待通知完成的检查", "Studies awaiting completion notice"),
        T::LastContact => ("最近与县级平台联系", "Last contact with the county"),
        T::Never => ("从未", "never"),
        T::FeedError => ("报告接收错误", "Report feed error"),
        T::ReportsHeading => ("收到的报告", "Received reports"),
        T::NoReports => ("暂无报告。", "No reports yet."),
        T::ShowingNewest => ("仅显示最新", "Showing the newest"),
        T::Critical => ("危急值", "Critical"),
        T::CriticalWaiting => ("危急值 · 待确认", "Critical · awaiting acknowledgement"),
        T::Patient => ("患者", "Patient"),
        T::Exam => ("检查", "Exam"),
        T::Accession => ("检查号", "Accession"),
        T::Report => ("报告", "Report"),
        T::Version => ("版本", "Version"),
        T::Signer => ("签发", "Signed by"),
        T::SignedAt => ("签发时间", "Signed at"),
        T::ReceivedAt => ("接收时间", "Received"),
        T::Verification => ("签名验证", "Signature"),
        T::Actions => ("操作", "Actions"),
        T::View => ("查看", "View"),
        T::SignatureValid => ("签名有效", "signature valid"),
        T::SignatureInvalid => (
            "签名验证失败，内容不可信",
            "signature verification failed: not trustworthy",
        ),
        T::OtherVersionsInvalid => ("个其他版本验证失败", "other version(s) failed verification"),
        T::BackToList => ("← 返回工作站首页", "← Back to the township page"),
        T::ReportTitle => ("诊断报告", "Report"),
        T::NoVerifiedVersion => (
            "警告：该报告没有任何通过签名验证的版本。其内容不可信，不得用于诊疗，也不提供打印。请联系县级平台。",
            "Warning: no version of this report passed signature verification. Its content cannot be trusted, must not be used for care and is not printed. Contact the county.",
        ),
        T::CurrentVersion => ("当前有效版本", "Current valid version"),
        T::AllVersions => ("全部版本", "All versions"),
        T::ReportStatus => ("报告状态", "Status"),
        T::AmendReason => ("修订原因", "Amendment reason"),
        T::CriticalAck => ("危急值确认", "Critical acknowledgement"),
        T::PrintPdf => ("打印PDF", "Print PDF"),
        T::PdfNotYet => ("尚未取得", "not fetched yet"),
        T::PdfNotFetched => (
            "PDF尚未从县级平台取得，将自动重试。",
            "The PDF has not been fetched from the county yet; retrying automatically.",
        ),
        T::PdfNotOffered => ("不提供", "not offered"),
        T::PreliminaryBy => ("初步报告医生", "Preliminary by"),
        T::PatientName => ("患者姓名", "Patient name"),
        T::PatientId => ("患者ID", "Patient ID"),
        T::ExamType => ("检查类型", "Exam type"),
        T::StudyUid => ("检查UID", "Study UID"),
        T::CriticalBanner => (
            "危急值报告：请临床医生阅读后立即确认。",
            "Critical result: a clinician must read and acknowledge it now.",
        ),
        T::NotFoundTitle => ("未找到报告", "Report not found"),
        T::NotFoundReport => ("没有这个编号的报告。", "There is no report with this id."),
        T::NotFoundVersion => ("没有这个报告版本。", "There is no such report version."),
        T::InternalError => ("内部错误", "Internal error"),
        T::DbReadFailed => (
            "读取工作站数据库失败，请稍后重试或联系管理员。",
            "Reading the gateway database failed; try again later or call the administrator.",
        ),
        T::PdfUnreadable => ("PDF文件无法读取，请联系管理员。", "The PDF file cannot be read; call the administrator."),
        T::PrintRefused => ("不提供打印", "Not printed"),
        T::PrintRefusedText => (
            "此报告版本未通过签名验证，内容不可信，不提供PDF打印。",
            "This version failed signature verification: its PDF is not offered.",
        ),
        T::PdfNotYetTitle => ("PDF尚未取得", "PDF not fetched yet"),
        T::PdfRetryText => (
            "此版本的PDF尚未从县级平台取得，将自动重试，请稍后再试。",
            "This version's PDF has not been fetched from the county yet; retrying, try again later.",
        ),
        T::RequestRefused => ("请求被拒绝", "Request refused"),
        T::CrossSite => (
            "跨站请求被拒绝：请在本页面上确认。",
            "Cross-site request refused: acknowledge from this page itself.",
        ),
        T::NameRequired => ("请填写姓名", "Name required"),
        T::NameRequiredText => (
            "请填写临床医生姓名（1–64个字符）。",
            "Enter the clinician's name (1-64 characters).",
        ),
        T::NotSaved => ("未能保存", "Not saved"),
        T::NotSavedText => ("未能保存确认，请重试。", "The acknowledgement could not be recorded; try again."),
        T::CannotAcknowledge => ("不能确认", "Cannot acknowledge"),
        T::NotVerifiedText => (
            "此版本未通过签名验证，不能确认。",
            "This version failed signature verification and cannot be acknowledged.",
        ),
        T::NotCriticalText => ("此版本不是危急值报告。", "This version is not a critical result."),
        T::SupersededText => (
            "此版本已被更正后的新版本取代，请查看并确认最新版本。",
            "A corrected version replaced this one: read and acknowledge the newest version.",
        ),
    };
    match lang {
        Lang::Zh => zh,
        Lang::En => en,
    }
}

/// A term group: the code values the data uses, named in both languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terms {
    /// Report status (`preliminary`, `final`, `amended`).
    Status,
    /// Exam kind (`imaging`, `ecg`, `lab`).
    Kind,
    /// Report field names (templates name them in English).
    Field,
    /// Outbox lanes (`imaging`, `lab`, `ecg`).
    Lane,
    /// Where an item was refused (`receive`, `hub`).
    Source,
}

/// (group, code, Chinese, English).
const TERMS: &[(Terms, &str, &str, &str)] = &[
    (Terms::Status, "preliminary", "初步报告", "Preliminary"),
    (Terms::Status, "final", "正式报告", "Final"),
    (Terms::Status, "amended", "修订报告", "Amended"),
    (Terms::Kind, "imaging", "影像", "Imaging"),
    (Terms::Kind, "ecg", "心电", "ECG"),
    (Terms::Kind, "lab", "检验", "Lab"),
    (Terms::Lane, "imaging", "影像（DICOM）", "Imaging (DICOM)"),
    (Terms::Lane, "lab", "检验（HL7）", "Lab results (HL7)"),
    (Terms::Lane, "ecg", "心电文件", "ECG files"),
    (
        Terms::Source,
        "receive",
        "工作站接收时拒收",
        "refused on receipt",
    ),
    (
        Terms::Source,
        "hub",
        "县级平台拒收",
        "rejected by the county",
    ),
    (Terms::Field, "findings", "检查所见", "Findings"),
    (Terms::Field, "impression", "诊断意见", "Impression"),
    (Terms::Field, "conclusion", "结论", "Conclusion"),
    (Terms::Field, "diagnosis", "诊断", "Diagnosis"),
    (Terms::Field, "recommendation", "建议", "Recommendation"),
    (Terms::Field, "recommendations", "建议", "Recommendations"),
    (Terms::Field, "technique", "检查方法", "Technique"),
    (Terms::Field, "history", "临床病史", "History"),
    (
        Terms::Field,
        "clinical_history",
        "临床病史",
        "Clinical history",
    ),
    (Terms::Field, "comparison", "对比", "Comparison"),
    (Terms::Field, "result", "结果", "Result"),
    (Terms::Field, "results", "结果", "Results"),
    (Terms::Field, "interpretation", "解读", "Interpretation"),
    (Terms::Field, "rhythm", "心律", "Rhythm"),
    (Terms::Field, "heart_rate", "心率", "Heart rate"),
    (Terms::Field, "rate", "心率", "Rate"),
    (Terms::Field, "intervals", "间期", "Intervals"),
    (Terms::Field, "axis", "电轴", "Axis"),
    (Terms::Field, "sources", "测量来源", "Measured by"),
    (
        Terms::Field,
        "automatic",
        "自动测量",
        "Automatic measurements",
    ),
    (Terms::Field, "summary", "小结", "Summary"),
    (Terms::Field, "alert", "危急值提示", "Alert"),
    (Terms::Field, "test", "检验项目", "Test"),
    (Terms::Field, "value", "结果值", "Value"),
];

/// The name of `code` in `group`; an unknown code is shown as it is (status: "unknown").
pub fn term(lang: Lang, group: Terms, code: &str) -> &str {
    match TERMS.iter().find(|(g, c, _, _)| *g == group && *c == code) {
        Some((_, _, zh, en)) => match lang {
            Lang::Zh => zh,
            Lang::En => en,
        },
        None if group == Terms::Status => match lang {
            Lang::Zh => "未知",
            Lang::En => "unknown",
        },
        None => code,
    }
}

/// A report version: "第2版", "v2".
pub fn version_label(lang: Lang, version: i64) -> String {
    match lang {
        Lang::Zh => format!("第{version}版"),
        Lang::En => format!("v{version}"),
    }
}

/// The heading of the current version: "当前有效版本：第2版（修订报告）".
pub fn current_heading(lang: Lang, version: i64, status: &str) -> String {
    let status = term(lang, Terms::Status, status);
    match lang {
        Lang::Zh => format!(
            "{}：{}（{status}）",
            t(lang, T::CurrentVersion),
            version_label(lang, version)
        ),
        Lang::En => format!(
            "{}: {} ({status})",
            t(lang, T::CurrentVersion),
            version_label(lang, version)
        ),
    }
}

/// "危急值：已由 {by} 于 {at} 确认。{relayed}" (`by` already escaped by the caller).
pub fn acknowledged_sentence(lang: Lang, by: &str, at: &str, relayed: bool) -> String {
    let relayed = if relayed {
        t(lang, T::RelayedToCounty)
    } else {
        t(lang, T::NotRelayedYet)
    };
    match lang {
        Lang::Zh => format!("危急值：已由 {by} 于 {at} 确认。{relayed}。"),
        Lang::En => format!("Critical result acknowledged by {by} at {at}; {relayed}."),
    }
}

/// How long something has waited, roughly ("3 分钟", "2 h 5 min").
pub fn age(lang: Lang, secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match lang {
        Lang::Zh if s < 60 => format!("{s} 秒"),
        Lang::Zh if s < 3600 => format!("{m} 分钟"),
        Lang::Zh if s < 86_400 => format!("{h} 小时 {m} 分钟"),
        Lang::Zh => format!("{d} 天 {h} 小时"),
        Lang::En if s < 60 => format!("{s} s"),
        Lang::En if s < 3600 => format!("{m} min"),
        Lang::En if s < 86_400 => format!("{h} h {m} min"),
        Lang::En => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_and_terms() {
        assert_eq!(Lang::parse("en-US"), Some(Lang::En));
        assert_eq!(Lang::parse("zh-CN"), Some(Lang::Zh));
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(t(Lang::Zh, T::Sent), "已发送");
        assert_eq!(t(Lang::En, T::Sent), "Sent");
        assert_eq!(term(Lang::En, Terms::Status, "final"), "Final");
        assert_eq!(term(Lang::Zh, Terms::Status, "final"), "正式报告");
        assert_eq!(term(Lang::Zh, Terms::Status, "odd"), "未知");
        assert_eq!(term(Lang::En, Terms::Field, "custom_field"), "custom_field");
        assert_eq!(age(Lang::Zh, 125), "2 分钟");
        assert_eq!(age(Lang::En, 3 * 3600 + 60), "3 h 1 min");
    }
}
