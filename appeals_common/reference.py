"""Fixed vocabularies of the programme (codes with their Chinese labels)."""

from __future__ import annotations

CHANNELS: dict[str, str] = {
    "sit_in": "局长坐诊",
    "chain_patrol": "链式巡诊",
    "door_visit": "上门问诊",
    "clinic_point": "问诊点",
    "observation_station": "营商环境观察站",
    "supervisor": "营商环境监督员",
    "service_zone": "优化营商环境服务保障专区",
    "investment_station": "投资服务站点",
    "investment_matrix": "投资建设项目政务服务矩阵",
    "hotline_12345": "12345热线",
    "online": "网上诉求",
    "gov_system": "其他政府系统",
}

# Activities appeals are taken at (附件1 schedule; 问诊点 sessions).
ACTIVITY_KINDS: dict[str, str] = {
    "sit_in": "局长坐诊",
    "chain_patrol": "链式巡诊",
    "door_visit": "上门问诊",
    "clinic_point": "问诊点专场",
}

URGENCIES: dict[str, str] = {"normal": "一般", "urgent": "紧急"}

# 回访 grades, best first; the first three count as satisfied (满意率).
FOLLOWUP_GRADES: dict[str, str] = {
    "very_satisfied": "非常满意",
    "satisfied": "满意",
    "basically_satisfied": "基本满意",
    "unsatisfied": "不满意",
    "very_unsatisfied": "非常不满意",
}
SATISFIED_GRADES = frozenset({"very_satisfied", "satisfied", "basically_satisfied"})

RESPONSE_OUTCOMES: dict[str, str] = {
    "solved": "已解决",
    "explained": "已解释说明",
    "not_solvable": "现行政策下无法解决",
}

# `feedback` is the lead unit's written answer to a key supervision order (书面反馈).
REPLY_ACTIONS = ("sign", "return", "extend", "respond", "feedback")

ROLES = ("bureau_admin", "bureau_staff", "department", "viewer")

# 退单 reasons a department may give (fixed list; text explains the case).
RETURN_REASONS: dict[str, str] = {
    "not_our_duty": "不属于本单位职责",
    "wrong_unit": "应由其他单位承办",
    "insufficient_info": "诉求信息不全，无法办理",
    "duplicate": "重复诉求",
    "other": "其他",
}

# 我陪群众走流程: the 四变 ways of walking a service process ...
WALKTHROUGH_MODES: dict[str, str] = {
    "in_person": "亲自办",
    "accompanied": "陪同办",
    "cross_region": "跨域办",
    "supervised": "督导办",
}
# ... scored on the 五看 standards (1 worst .. 5 best) ...
FIVE_CHECKS: dict[str, str] = {
    "accuracy": "事项准不准",
    "smoothness": "流程通不通",
    "proofs": "证明奇不奇",
    "experience": "体验优不优",
    "conduct": "作风实不实",
}
# ... and what is found goes on one of three lists, each item closed out (销号) on its own.
WALKTHROUGH_LISTS: dict[str, str] = {
    "problem": "问题清单",
    "demand": "需求清单",
    "optimization": "优化清单",
}

# 附件3 巡诊服务事项清单: how far each service item got.
SERVICE_ITEM_STATUSES: dict[str, str] = {
    "done": "已办结",
    "in_progress": "办理中",
    "pending": "未办理",
}
