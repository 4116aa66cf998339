"""The vendor's app and interest-tag taxonomy: 26 categories, 1,300 apps, 10,400 tags.

Ids are stable: they are a pure function of the taxonomy version, so a batch names its version
and the bank checks every app and tag id against exactly that version. Apps are spread over the
categories Zipf-like (games and tools have the most apps, lottery and banking the fewest), as in a
Chinese Android app market; within a category apps carry a popularity rank that the synthetic
world turns into Zipf usage. Tags are `category > topic > facet` interests, 400 per category.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import polars as pl

from contracts.errors import ConfigError

__all__ = [
    "CATEGORIES",
    "CURRENT_VERSION",
    "Category",
    "Taxonomy",
    "build_taxonomy",
    "load_taxonomy",
]

CURRENT_VERSION = "2026.1"
_KNOWN_VERSIONS = (CURRENT_VERSION,)


@dataclass(frozen=True, slots=True)
class Category:
    """One app category: stable id, code, English and Chinese names, topics for its tags."""

    category_id: int
    code: str
    name: str
    name_zh: str
    topics: tuple[str, ...]
    known_apps: tuple[str, ...]


# Order is by number of apps in the market (largest first); it fixes the Zipf ranks and ids.
# fmt: off
CATEGORIES: tuple[Category, ...] = tuple(
    Category(i + 1, code, name, zh, tuple(topics.split(",")), tuple(apps.split(",")))
    for i, (code, name, zh, topics, apps) in enumerate(
        [
            ("games", "Games", "游戏", "moba,rpg,casual,card,puzzle,shooter,strategy,racing,sim,esports", "Honor of Kings,Peacekeeper Elite,Genshin Impact,Happy Landlords"),
            ("tools", "Tools", "工具", "cleaner,vpn,keyboard,wifi,flashlight,scanner,file manager,translator,calculator,weather", "WPS Scanner,Baidu Input,WiFi Master Key,Moji Weather"),
            ("ecommerce", "E-commerce", "电商", "apparel,electronics,grocery,second hand,cross border,group buying,luxury,home goods,flash sale,live shopping", "Taobao,JD,Pinduoduo,Xianyu"),
            ("education", "Education", "教育", "k12 tutoring,english,exam prep,coding,kids reading,vocational,language,music lessons,math,university", "Zuoyebang,Youdao Dictionary,Xueersi,Fenbi"),
            ("social", "Social", "社交", "messaging,dating,community,forum,anonymous,group chat,voice chat,alumni,expat,fan club", "WeChat,QQ,Weibo,Soul"),
            ("short_video", "Short video", "短视频", "comedy,dance,food vlog,beauty vlog,pets,travel vlog,knowledge,auto vlog,farm life,drama", "Douyin,Kuaishou,Xigua Video,WeChat Channels"),
            ("finance", "Finance", "理财", "stocks,funds,insurance,credit,wealth,crypto,payments,budgeting,gold,bonds", "Alipay,Tonghuashun,East Money,Ant Fortune"),
            ("local_life", "Local life", "本地生活", "restaurants,hotels,cinema,ktv,massage,housekeeping,laundry,pet care,coupons,group deals", "Dianping,Meituan,58 Tongcheng,Koubei"),
            ("health", "Health", "健康", "online doctor,pharmacy,fitness tracker,diet,sleep,mental health,chronic care,tcm,checkup,women health", "Ping An Good Doctor,JD Health,Dingxiang Doctor,Keep Health"),
            ("news", "News", "新闻", "headlines,finance news,tech news,sports news,local news,international,entertainment,military,auto news,property news", "Toutiao,Tencent News,NetEase News,The Paper"),
            ("office", "Office", "办公", "documents,email,cloud drive,meetings,attendance,notes,pdf,project mgmt,hr,crm", "DingTalk,WeCom,Feishu,WPS Office"),
            ("photo", "Photo", "摄影", "beauty camera,editing,collage,video editing,stickers,filters,id photo,photo print,album,animation", "Meitu,Xingtu,CapCut,B612"),
            ("travel", "Travel", "旅行", "flights,trains,hotels,outbound,domestic tours,visa,car rental,cruise,camping,theme parks", "Ctrip,Qunar,Fliggy,12306"),
            ("maps_mobility", "Maps & mobility", "地图出行", "navigation,ride hailing,bike sharing,bus,metro,parking,ev charging,carpool,designated driver,traffic", "Amap,Baidu Maps,DiDi,Hello Bike"),
            ("reading", "Reading", "阅读", "web novels,ebooks,comics,audiobooks,magazines,romance,fantasy,history,business books,poetry", "QQ Reader,Fanqie Novel,WeRead,Qidian"),
            ("music", "Music", "音乐", "streaming,karaoke,radio,podcasts,classical,rap,folk,k-pop,instruments,concerts", "QQ Music,NetEase Cloud Music,Kugou,Kuwo"),
            ("live_streaming", "Live streaming", "直播", "game streams,talent shows,outdoor,live commerce,chatting,education live,sports live,music live,tipping,vtubers", "Huya,Douyu,Bilibili Live,YY"),
            ("mother_baby", "Mother & baby", "母婴", "pregnancy,newborn,infant food,diapers,early education,parenting tips,kids clothing,toys,child health,school choice", "Babytree,Mama.cn,Kidswant,Beibei"),
            ("auto", "Auto", "汽车", "new cars,used cars,car loans,maintenance,car insurance,ev,car reviews,car wash,modification,driving test", "Autohome,Dongchedi,Yiche,Guazi"),
            ("sport", "Sport", "运动", "running,gym,yoga,cycling,football,basketball,swimming,hiking,skiing,badminton", "Keep,Codoon,Yuedong Quan,Hupu"),
            ("beauty", "Beauty", "美妆", "skincare,makeup,perfume,hair,nails,medical aesthetics,men grooming,reviews,tutorials,luxury beauty", "Xiaohongshu,Gengmei,So-Young,Meili Shuo"),
            ("jobs", "Jobs", "招聘", "white collar,blue collar,internships,freelance,headhunting,campus hiring,part time,remote work,civil service,resume", "Boss Zhipin,Zhaopin,Liepin,51job"),
            ("property", "Property", "房产", "new homes,second hand homes,rentals,decoration,furniture,mortgage,commercial,property mgmt,home services,valuation", "Beike,Anjuke,Lianjia,Fang.com"),
            ("food_delivery", "Food delivery", "外卖", "fast food,milk tea,coffee,hotpot,late night,healthy meals,groceries,fresh fruit,bakery,regional cuisine", "Meituan Waimai,Ele.me,Luckin Coffee,Hema"),
            ("lottery", "Lottery", "彩票", "sports lottery,welfare lottery,scratch cards,football pools,number games,draw results,tips,syndicates,jackpot alerts,history", "China Sports Lottery,Welfare Lottery,500.com,Lottery Results"),
            ("banking", "Banking", "银行", "mobile banking,credit cards,loans,deposits,wealth products,transfers,forex,bill pay,points,digital cny", "ICBC,CCB,China Merchants Bank,e-CNY"),
        ]
    )
)
# fmt: on

_FACETS = (
    "new user", "heavy user", "lapsed user", "weekend user", "night owl", "morning user",
    "premium", "budget", "price sensitive", "brand loyal", "early adopter", "reviewer",
    "family", "student", "young professional", "senior", "female skew", "male skew",
    "tier 1 city", "lower tier city", "high spender", "low spender", "frequent", "occasional",
    "seasonal", "holiday", "commuter", "remote", "social sharer", "content creator",
    "subscriber", "coupon user", "installment user", "cross category", "multi device",
    "tablet user", "wearable user", "vip member", "trial user", "recently active",
)  # fmt: skip

_APPS_TOTAL = 1300
_MIN_APPS_PER_CATEGORY = 12
_ZIPF_S_CATEGORIES = 0.8


def _apps_per_category() -> list[int]:
    """Give the number of apps in each category: Zipf over category rank, summing to 1,300."""
    weights = [1.0 / (rank**_ZIPF_S_CATEGORIES) for rank in range(1, len(CATEGORIES) + 1)]
    spare = _APPS_TOTAL - _MIN_APPS_PER_CATEGORY * len(CATEGORIES)
    counts = [_MIN_APPS_PER_CATEGORY + int(spare * w / sum(weights)) for w in weights]
    counts[0] += _APPS_TOTAL - sum(counts)  # rounding remainder goes to the largest category
    return counts


@dataclass(frozen=True)
class Taxonomy:
    """A taxonomy version: categories, apps and tags as polars frames with stable integer ids."""

    version: str
    categories: pl.DataFrame  # category_id:i16, code, name, name_zh
    apps: pl.DataFrame  # app_id:i32, category_id:i16, name, popularity_rank:i32 (1 = top)
    tags: pl.DataFrame  # tag_id:i32, category_id:i16, topic, name

    @property
    def n_apps(self) -> int:
        return self.apps.height

    @property
    def n_tags(self) -> int:
        return self.tags.height

    @property
    def max_app_id(self) -> int:
        return int(self.apps["app_id"].max())  # type: ignore[arg-type]

    @property
    def max_tag_id(self) -> int:
        return int(self.tags["tag_id"].max())  # type: ignore[arg-type]


def build_taxonomy(version: str) -> Taxonomy:
    """Return the taxonomy of a known `version`, built afresh (`load_taxonomy` caches it)."""
    categories = pl.DataFrame(
        {
            "category_id": [c.category_id for c in CATEGORIES],
            "code": [c.code for c in CATEGORIES],
            "name": [c.name for c in CATEGORIES],
            "name_zh": [c.name_zh for c in CATEGORIES],
        },
        schema={
            "category_id": pl.Int16,
            "code": pl.String,
            "name": pl.String,
            "name_zh": pl.String,
        },
    )
    app_ids: list[int] = []
    app_cats: list[int] = []
    app_names: list[str] = []
    app_ranks: list[int] = []
    next_id = 1
    for cat, count in zip(CATEGORIES, _apps_per_category(), strict=True):
        for rank in range(1, count + 1):
            known = rank <= len(cat.known_apps)
            name = cat.known_apps[rank - 1] if known else f"{cat.name} app {rank:03d}"
            app_ids.append(next_id)
            app_cats.append(cat.category_id)
            app_names.append(name)
            app_ranks.append(rank)
            next_id += 1
    apps = pl.DataFrame(
        {
            "app_id": app_ids,
            "category_id": app_cats,
            "name": app_names,
            "popularity_rank": app_ranks,
        },
        schema={
            "app_id": pl.Int32,
            "category_id": pl.Int16,
            "name": pl.String,
            "popularity_rank": pl.Int32,
        },
    )
    tag_rows = [
        (cat.category_id, topic, f"{cat.name} > {topic} > {facet}")
        for cat in CATEGORIES
        for topic in cat.topics
        for facet in _FACETS
    ]
    tags = pl.DataFrame(
        {
            "tag_id": list(range(1, len(tag_rows) + 1)),
            "category_id": [r[0] for r in tag_rows],
            "topic": [r[1] for r in tag_rows],
            "name": [r[2] for r in tag_rows],
        },
        schema={"tag_id": pl.Int32, "category_id": pl.Int16, "topic": pl.String, "name": pl.String},
    )
    return Taxonomy(version=version, categories=categories, apps=apps, tags=tags)


@cache
def load_taxonomy(version: str = CURRENT_VERSION) -> Taxonomy:
    """Return the taxonomy of `version`; the same version always gives the same ids and names."""
    if version not in _KNOWN_VERSIONS:
        raise ConfigError(
            f"unknown taxonomy version {version!r}; this build knows {', '.join(_KNOWN_VERSIONS)}."
            " Ask the vendor which version its batch uses, or upgrade the platform",
            setting="taxonomy_version",
        )
    return build_taxonomy(version)
