//! The story residents: invented people with fixed identity numbers that
//! the demo and the tests use to play the scenes of `domain.md`. All are
//! synthetic; the numbers carry valid GB 11643-1999 check characters.

/// One story resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Story {
    pub id_number: &'static str,
    pub name: &'static str,
    /// What this resident demonstrates.
    pub about: &'static str,
}

/// (a) Villager of Mosuo village (磨所村), Salian town (撒莲镇), Miyi
/// county; valid card; needs a temporary identity card before leaving for work.
pub const MOSUO_VILLAGER: Story = Story {
    id_number: "510421199603140825",
    name: "罗春花",
    about: "Mosuo village, Salian town, Miyi county; valid card; applies for a temporary ID card",
};

/// (b) Laid-off worker registered at Dongli-station community (动力站社区),
/// West District; 86 insured months, separated, registered unemployed.
pub const LAID_OFF_WORKER: Story = Story {
    id_number: "510403198507220465",
    name: "陈晓燕",
    about: "Dongli-station community, West District; laid off after 86 insured months, registered unemployed: eligible for unemployment benefit",
};

/// (c) Retiree receiving a pension, certified two months ago.
pub const CERTIFIED_RETIREE: Story = Story {
    id_number: "510402195805090355",
    name: "刘建国",
    about: "East District retiree receiving a pension; qualification certified two months ago (not due)",
};

/// (d) Retiree whose qualification certification is overdue (15 months ago).
pub const OVERDUE_RETIREE: Story = Story {
    id_number: "510422195511300287",
    name: "赵桂兰",
    about: "Yanbian County retiree receiving a pension; last certification 15 months ago: qualification due",
};

/// (e) Worker insured for only 7 months, separated and registered unemployed.
pub const SHORT_INSURED_WORKER: Story = Story {
    id_number: "510411199901170130",
    name: "孙浩",
    about: "Renhe District worker with 7 insured months: not eligible for unemployment benefit (needs 12)",
};

/// (f) Deceased pensioner: death registered by civil affairs, police record
/// not alive and card cancelled, while the pension is still being paid.
pub const DECEASED_PENSIONER: Story = Story {
    id_number: "510402194609020574",
    name: "周德明",
    about: "East District pensioner who died 40 days ago: death registered, card cancelled, pension still paid and certification due",
};

/// The widow of [`DECEASED_PENSIONER`].
pub const WIDOW: Story = Story {
    id_number: "510402194803150401",
    name: "吴淑芬",
    about: "widow of the deceased pensioner; marital status widowed; receiving a pension",
};

/// (g) A living person whose identity card has been cancelled.
pub const CANCELLED_CARD: Story = Story {
    id_number: "510403198812050714",
    name: "郑伟",
    about: "West District resident whose identity card is cancelled",
};

/// (h) Subsistence-allowance recipient: divorced, household head, Renhe.
pub const SUBSISTENCE_RECIPIENT: Story = Story {
    id_number: "510411197904180642",
    name: "黄玉梅",
    about: "Renhe District household head, divorced, receiving the subsistence allowance (低保)",
};

/// (i) A person never insured: no social-insurance record at all.
pub const NEVER_INSURED: Story = Story {
    id_number: "510422199208080910",
    name: "马小军",
    about: "Yanbian County resident never insured: no unemployment, pension or contribution record",
};

/// (j) The subsistence recipient's daughter, in her household: registered
/// unemployed at the last review, in work again for two months — a reason
/// to refer the household's review.
pub const DIBAO_DAUGHTER: Story = Story {
    id_number: "510411200103060629",
    name: "黄思雨",
    about: "daughter in the subsistence recipient's household; newly employed two months ago (2 insured months, no longer registered unemployed): the review is referred",
};

/// (k) The subsistence recipient's mother, in her household: never insured,
/// no pension.
pub const DIBAO_MOTHER: Story = Story {
    id_number: "510411195008120642",
    name: "杨秀英",
    about: "mother in the subsistence recipient's household; never insured, no pension",
};

/// (l) A Salian-town entrepreneur, legal representative of a small
/// enterprise that registers its employees for social insurance.
pub const SALIAN_ENTREPRENEUR: Story = Story {
    id_number: "51042119780415081X",
    name: "李建华",
    about: "Salian town, Miyi county; legal representative of a mango-growing company in operation",
};

/// Every story resident, in the order above.
pub const ALL: [Story; 13] = [
    MOSUO_VILLAGER,
    LAID_OFF_WORKER,
    CERTIFIED_RETIREE,
    OVERDUE_RETIREE,
    SHORT_INSURED_WORKER,
    DECEASED_PENSIONER,
    WIDOW,
    CANCELLED_CARD,
    SUBSISTENCE_RECIPIENT,
    NEVER_INSURED,
    DIBAO_DAUGHTER,
    DIBAO_MOTHER,
    SALIAN_ENTREPRENEUR,
];

/// A story enterprise: an invented organisation with a fixed unified social
/// credit code (valid GB 32100-2015 check character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoryEnterprise {
    pub credit_code: &'static str,
    pub name: &'static str,
    /// The registered legal representative (a story resident).
    pub legal_representative: Story,
    pub about: &'static str,
}

/// (m) A small company in operation in Salian town, registering its
/// employees for social insurance at the township hall.
pub const SALIAN_MANGO: StoryEnterprise = StoryEnterprise {
    credit_code: "91510421TB6A1B2C3G",
    name: "米易县撒莲芒果种植有限公司",
    legal_representative: SALIAN_ENTREPRENEUR,
    about: "in operation for six years, not on the abnormal operations list; legal representative Li Jianhua",
};

/// (n) An enterprise whose business licence was revoked (吊销).
pub const REVOKED_LICENCE: StoryEnterprise = StoryEnterprise {
    credit_code: "91510402TB6B4D5E6L",
    name: "攀枝花市东区恒达建材经营部",
    legal_representative: CANCELLED_CARD,
    about: "licence revoked; still on the abnormal operations list",
};

/// (o) An enterprise deregistered (注销).
pub const CANCELLED_ENTERPRISE: StoryEnterprise = StoryEnterprise {
    credit_code: "91510403TB6C7F8G9P",
    name: "攀枝花市西区清香坪小食品有限公司",
    legal_representative: SHORT_INSURED_WORKER,
    about: "cancelled (deregistered) last year",
};

/// (p) An enterprise in operation but listed as abnormal: its annual report
/// was not filed.
pub const ABNORMAL_ENTERPRISE: StoryEnterprise = StoryEnterprise {
    credit_code: "91510411TB6D2H3J4T",
    name: "攀枝花市仁和区金沙物流有限公司",
    legal_representative: LAID_OFF_WORKER,
    about: "in operation, on the abnormal operations list since its annual report was not filed",
};

/// (q) An enterprise whose registered legal representative is the deceased
/// pensioner: the register still names him, the police register says he died.
pub const DECEASED_REPRESENTATIVE: StoryEnterprise = StoryEnterprise {
    credit_code: "91510402TB6E5K6L7E",
    name: "攀枝花市东区德明五金店有限公司",
    legal_representative: DECEASED_PENSIONER,
    about: "in operation; its registered legal representative died 40 days ago",
};

/// Every story enterprise, in the order above.
pub const ENTERPRISES: [StoryEnterprise; 5] = [
    SALIAN_MANGO,
    REVOKED_LICENCE,
    CANCELLED_ENTERPRISE,
    ABNORMAL_ENTERPRISE,
    DECEASED_REPRESENTATIVE,
];

/// A valid credit code that market regulation does not hold.
pub const UNKNOWN_ENTERPRISE_CODE: &str = "91510400TB62000019";

/// A valid identity number that no reference department holds (police
/// answers NOT_FOUND; the other departments hold no record of it either).
pub const UNKNOWN_PERSON_ID: &str = "510402200001010018";

#[cfg(test)]
mod tests {
    use super::*;
    use tongban_core::IdNumber;

    #[test]
    fn story_ids_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for s in ALL.iter().map(|s| s.id_number).chain([UNKNOWN_PERSON_ID]) {
            let id = IdNumber::parse(s).unwrap();
            assert_eq!(id.as_str(), s);
            assert!(seen.insert(s));
            assert!(tongban_core::id::panzhihua_region_name(id.region_code()).is_some());
        }
        let mut codes = std::collections::HashSet::new();
        for code in ENTERPRISES
            .iter()
            .map(|e| e.credit_code)
            .chain([UNKNOWN_ENTERPRISE_CODE])
        {
            let parsed = tongban_core::CreditCode::parse(code).unwrap();
            assert_eq!(parsed.as_str(), code);
            assert!(codes.insert(code));
        }
    }
}
