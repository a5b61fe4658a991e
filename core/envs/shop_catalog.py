"""The built-in shop's catalogue, goals and reward (pure data and functions, no page logic).

Everything is generated deterministically from a seed with `random.Random` (string seeds are
hashed with SHA-512 by `random`, so they are stable across processes and Python runs).

Catalogue: categories › subcategories › product types (the table below); each product has an
asin-like id, a title, a category breadcrumb (`beauty & personal care › hair care › shampoo`),
3-4 attributes from its type's pool, 1-2 option dimensions (colour, size, scent, ...) with 2-5
values each, a price, a rating, and description / features / reviews text written from them.

Goal (WebShop's synthetic goals): a target product, 1-3 of its attributes, one value of each of
its option dimensions, and a price limit drawn as WebShop does (the upper of two sorted samples
from the first four multiples of 10 above the price).

Reward (WebShop's `get_reward`, with exact instead of fuzzy matching):

    r_type * (matched attributes + matched options + [price <= limit]) / (#attributes + #options + 1)

r_type (WebShop's type factor, made exact): 1.0 when the bought product has the goal's product
type; 0.5 when it is another type of the same top-level category (WebShop: no query/category/
title match); 0.1 when it is in another category but its type shares the head noun ("running
shoes" for "hiking shoes": WebShop's small title overlap); 0.0 otherwise (WebShop: no shared
noun). An attribute matches when the product has it; an option matches when the value selected
on the item page equals the goal's value for that dimension.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

# category -> list of (subcategory, type, attribute pool, {option dimension: values}, (min, max) price)
CATALOG_SPEC: dict[str, list[tuple[str, str, list[str], dict[str, list[str]], tuple[float, float]]]] = {
    "beauty & personal care": [
        ("hair care", "shampoo", ["sulfate free", "paraben free", "natural ingredients", "long lasting",
                                  "cruelty free", "for dry hair", "color safe"],
         {"size": ["8 fl oz", "12 fl oz", "16 fl oz", "33.8 fl oz"],
          "scent": ["coconut", "lavender", "mint", "argan oil", "unscented"]}, (6, 35)),
        ("makeup", "lipstick", ["long lasting", "matte finish", "cruelty free", "paraben free",
                                "highly pigmented", "moisturizing"],
         {"color": ["red", "nude", "pink", "berry", "coral", "plum"]}, (5, 28)),
        ("skin care", "face moisturizer", ["fragrance free", "for sensitive skin", "oil free", "spf 30",
                                           "hyaluronic acid", "anti aging", "non comedogenic"],
         {"size": ["1.7 oz", "2.5 oz", "3.4 oz"]}, (9, 48)),
        ("personal care", "deodorant", ["aluminum free", "long lasting", "natural ingredients",
                                        "for sensitive skin", "baking soda free", "vegan"],
         {"scent": ["citrus", "lavender", "cedarwood", "unscented", "eucalyptus"],
          "size": ["2.6 oz", "3 oz", "pack of 3"]}, (4, 22)),
    ],
    "grocery & gourmet food": [
        ("beverages", "coffee beans", ["whole bean", "dark roast", "organic", "fair trade", "low acid",
                                       "single origin"],
         {"size": ["12 oz", "2 lb", "5 lb"], "flavor": ["original", "vanilla", "hazelnut", "mocha"]}, (8, 45)),
        ("beverages", "green tea", ["organic", "caffeine free", "non gmo", "individually wrapped",
                                    "gluten free", "kosher"],
         {"flavor": ["jasmine", "mint", "lemon", "ginger", "matcha"], "size": ["20 count", "50 count",
                                                                                "100 count"]}, (4, 25)),
        ("snacks", "protein bars", ["gluten free", "high protein", "low sugar", "keto friendly", "vegan",
                                    "non gmo"],
         {"flavor": ["chocolate", "peanut butter", "cookie dough", "almond"],
          "size": ["12 count", "24 count"]}, (12, 42)),
        ("condiments", "hot sauce", ["gluten free", "no preservatives", "extra hot", "small batch",
                                     "vegan", "low sodium"],
         {"flavor": ["habanero", "chipotle", "garlic", "mango"], "size": ["5 fl oz", "pack of 3"]}, (4, 24)),
    ],
    "clothing": [
        ("men", "t-shirt", ["cotton", "slim fit", "short sleeve", "machine washable", "moisture wicking",
                            "crew neck"],
         {"color": ["black", "white", "navy", "heather grey", "olive"],
          "size": ["small", "medium", "large", "x-large", "xx-large"]}, (9, 30)),
        ("men", "hoodie", ["fleece lined", "pullover", "machine washable", "relaxed fit", "cotton blend",
                           "with pockets"],
         {"color": ["black", "charcoal", "maroon", "forest green", "navy"],
          "size": ["small", "medium", "large", "x-large"]}, (18, 60)),
        ("women", "jeans", ["high waist", "stretch", "slim fit", "machine washable", "button closure",
                            "distressed"],
         {"color": ["light wash", "dark wash", "black", "medium wash"],
          "size": ["2", "4", "6", "8", "10", "12"]}, (20, 70)),
        ("women", "summer dress", ["floral print", "short sleeve", "with pockets", "v neck",
                                   "machine washable", "loose fit"],
         {"color": ["blue", "yellow", "white", "red floral"], "size": ["small", "medium", "large"]}, (15, 55)),
    ],
    "shoes": [
        ("athletic", "running shoes", ["lightweight", "breathable", "non slip", "memory foam",
                                       "rubber sole", "wide fit"],
         {"color": ["black", "white", "grey", "blue", "pink"],
          "size": ["7", "8", "9", "10", "11", "12"]}, (30, 120)),
        ("outdoor", "hiking boots", ["waterproof", "non slip", "ankle support", "rubber sole",
                                     "lightweight", "leather"],
         {"color": ["brown", "black", "tan"], "size": ["7", "8", "9", "10", "11"]}, (45, 160)),
        ("casual", "slippers", ["memory foam", "non slip", "plush lining", "machine washable",
                                "indoor outdoor", "anti skid"],
         {"color": ["grey", "pink", "navy", "beige"], "size": ["small", "medium", "large"]}, (10, 35)),
    ],
    "electronics": [
        ("audio", "wireless earbuds", ["noise cancelling", "bluetooth 5.3", "water resistant",
                                       "long battery life", "fast charging", "with microphone"],
         {"color": ["black", "white", "blue"]}, (18, 130)),
        ("accessories", "phone case", ["shockproof", "slim", "wireless charging compatible",
                                       "anti scratch", "with card holder", "clear"],
         {"color": ["black", "clear", "purple", "green", "red"],
          "size": ["iphone 14", "iphone 15", "galaxy s23", "pixel 8"]}, (6, 30)),
        ("accessories", "usb c charger", ["fast charging", "foldable plug", "dual port", "compact",
                                          "gan technology", "travel friendly"],
         {"color": ["white", "black"], "size": ["20w", "45w", "65w", "100w"]}, (10, 55)),
        ("audio", "bluetooth speaker", ["waterproof", "portable", "long battery life", "deep bass",
                                        "hands free calling", "easy to carry"],
         {"color": ["black", "blue", "red", "camo"]}, (20, 110)),
    ],
    "home & kitchen": [
        ("bedding", "bed sheets", ["deep pocket", "breathable", "wrinkle free", "machine washable",
                                   "100% cotton", "cooling"],
         {"color": ["white", "grey", "navy", "sage green", "ivory"],
          "size": ["twin", "full", "queen", "king"]}, (20, 80)),
        ("kitchen", "coffee mug", ["dishwasher safe", "microwave safe", "ceramic", "large capacity",
                                   "insulated", "with lid"],
         {"color": ["white", "black", "blue", "speckled"], "size": ["12 oz", "16 oz", "20 oz"]}, (8, 30)),
        ("decor", "throw pillow cover", ["decorative", "velvet", "hidden zipper", "machine washable",
                                         "set of 2", "soft"],
         {"color": ["mustard", "teal", "blush pink", "cream", "charcoal"],
          "size": ["18 x 18 inch", "20 x 20 inch", "22 x 22 inch"]}, (8, 28)),
        ("bath", "bath towel", ["quick dry", "highly absorbent", "100% cotton", "oversized",
                                "machine washable", "hotel quality"],
         {"color": ["white", "grey", "navy", "aqua"], "size": ["set of 2", "set of 4", "set of 6"]}, (15, 60)),
    ],
    "tools & home improvement": [
        ("lighting", "led light bulb", ["dimmable", "energy saving", "daylight", "long lasting",
                                        "flicker free", "soft white"],
         {"size": ["40w equivalent", "60w equivalent", "100w equivalent"],
          "color": ["2700k", "5000k"]}, (6, 30)),
        ("power tools", "cordless drill", ["brushless", "lightweight", "with battery", "variable speed",
                                           "led work light", "compact"],
         {"size": ["12v", "20v"]}, (35, 150)),
        ("hand tools", "tape measure", ["magnetic hook", "easy to read", "shock absorbent",
                                        "auto lock", "compact", "belt clip"],
         {"size": ["16 ft", "25 ft", "35 ft"]}, (6, 28)),
    ],
    "sports & outdoors": [
        ("fitness", "yoga mat", ["non slip", "extra thick", "eco friendly", "with carrying strap",
                                 "lightweight", "easy to clean"],
         {"color": ["purple", "black", "teal", "pink", "grey"], "size": ["6mm", "8mm", "10mm"]}, (15, 55)),
        ("hydration", "water bottle", ["bpa free", "insulated", "leak proof", "stainless steel",
                                       "dishwasher safe", "with straw lid"],
         {"color": ["black", "white", "mint", "navy", "lilac"], "size": ["20 oz", "32 oz", "40 oz"]}, (12, 45)),
        ("camping", "camping tent", ["waterproof", "easy setup", "lightweight", "with rainfly",
                                     "ventilated", "double layer"],
         {"size": ["2 person", "4 person", "6 person"], "color": ["green", "orange", "grey"]}, (40, 200)),
        ("fitness", "resistance bands", ["with handles", "latex free", "portable", "heavy duty",
                                         "set of 5", "anti snap"],
         {"size": ["light", "medium", "heavy"]}, (9, 35)),
    ],
    "toys & games": [
        ("building toys", "building blocks", ["compatible with major brands", "bpa free",
                                              "educational", "for ages 6+", "with storage box",
                                              "creative"],
         {"size": ["500 pieces", "1000 pieces", "1500 pieces"]}, (14, 60)),
        ("puzzles", "jigsaw puzzle", ["1000 pieces", "for adults", "thick pieces", "eco friendly",
                                      "with poster", "landscape"],
         {"color": ["ocean", "forest", "city night", "flower garden"]}, (10, 30)),
        ("stuffed animals", "plush toy", ["soft", "machine washable", "hypoallergenic", "for kids",
                                          "huggable", "gift for kids"],
         {"color": ["brown", "white", "pink", "grey"], "size": ["8 inch", "12 inch", "18 inch"]}, (8, 35)),
    ],
    "pet supplies": [
        ("dogs", "dog collar", ["adjustable", "reflective", "durable", "quick release buckle",
                                "padded", "waterproof"],
         {"color": ["red", "blue", "black", "orange", "pink"],
          "size": ["small", "medium", "large"]}, (6, 25)),
        ("cats", "cat litter", ["clumping", "odor control", "dust free", "unscented", "lightweight",
                                "natural"],
         {"size": ["10 lb", "20 lb", "40 lb"]}, (9, 40)),
        ("dogs", "dog bed", ["orthopedic", "machine washable", "non slip bottom", "waterproof liner",
                             "calming", "memory foam"],
         {"color": ["grey", "brown", "navy"], "size": ["small", "medium", "large", "x-large"]}, (20, 90)),
    ],
    "office products": [
        ("writing", "gel pens", ["quick dry", "smooth writing", "fine point", "retractable",
                                 "assorted colors", "comfort grip"],
         {"size": ["12 pack", "24 pack", "48 pack"], "color": ["black", "blue", "assorted"]}, (6, 25)),
        ("paper", "notebook", ["hardcover", "dotted", "lined", "a5", "thick paper", "with elastic band"],
         {"color": ["black", "navy", "forest green", "burgundy"], "size": ["pack of 1", "pack of 3"]}, (7, 28)),
        ("organization", "desk organizer", ["with drawers", "mesh", "space saving", "sturdy",
                                            "easy assembly", "multi functional"],
         {"color": ["black", "white", "rose gold"]}, (12, 40)),
    ],
    "health & household": [
        ("vitamins", "vitamin d3", ["non gmo", "gluten free", "easy to swallow", "high potency",
                                    "third party tested", "softgels"],
         {"size": ["60 count", "120 count", "240 count"], "flavor": ["unflavored", "lemon"]}, (7, 30)),
        ("cleaning", "hand sanitizer", ["kills 99.9% of germs", "moisturizing", "travel size",
                                        "alcohol based", "fragrance free", "with aloe"],
         {"size": ["2 fl oz", "8 fl oz", "pack of 6"], "scent": ["original", "lavender", "citrus"]}, (4, 25)),
        ("first aid", "first aid kit", ["compact", "waterproof case", "for home and car",
                                        "fda approved", "emergency", "lightweight"],
         {"size": ["100 pieces", "200 pieces", "300 pieces"]}, (12, 45)),
    ],
    "baby": [
        ("diapering", "baby wipes", ["fragrance free", "hypoallergenic", "plant based", "thick",
                                     "for sensitive skin", "dermatologist tested"],
         {"size": ["pack of 3", "pack of 6", "pack of 12"]}, (8, 35)),
        ("feeding", "baby bottle", ["bpa free", "anti colic", "easy to clean", "slow flow",
                                    "dishwasher safe", "glass"],
         {"size": ["4 oz", "8 oz", "9 oz"], "color": ["clear", "blue", "pink"]}, (8, 32)),
        ("nursery", "swaddle blanket", ["muslin", "breathable", "soft", "organic cotton",
                                        "machine washable", "large size"],
         {"color": ["sage", "blush", "grey stars", "white"], "size": ["pack of 2", "pack of 4"]}, (12, 40)),
    ],
    "garden & outdoor": [
        ("watering", "garden hose", ["expandable", "kink free", "lightweight", "leak proof",
                                     "with spray nozzle", "heavy duty"],
         {"size": ["25 ft", "50 ft", "100 ft"], "color": ["green", "blue", "black"]}, (15, 65)),
        ("lighting", "solar lights", ["waterproof", "auto on off", "warm white", "easy install",
                                      "long lasting", "for pathway"],
         {"size": ["pack of 4", "pack of 8", "pack of 12"]}, (14, 50)),
        ("planters", "plant pots", ["with drainage holes", "ceramic", "indoor outdoor", "modern",
                                    "set of 3", "with saucer"],
         {"color": ["white", "terracotta", "black", "sage green"],
          "size": ["4 inch", "6 inch", "8 inch"]}, (12, 45)),
    ],
    "automotive": [
        ("interior", "car phone mount", ["magnetic", "one hand operation", "360 degree rotation",
                                         "for dashboard", "strong suction", "universal"],
         {"color": ["black", "silver"]}, (8, 30)),
        ("interior", "seat covers", ["waterproof", "universal fit", "breathable", "easy install",
                                     "leather", "full set"],
         {"color": ["black", "beige", "grey", "red"]}, (20, 90)),
        ("tools", "tire inflator", ["portable", "digital gauge", "auto shut off", "cordless",
                                    "with led light", "fast inflation"],
         {"size": ["12v", "rechargeable"]}, (20, 70)),
    ],
}

MAX_CATEGORIES = len(CATALOG_SPEC)
BRANDS = [
    "Lumora", "Brightwell", "Northpeak", "Velora", "Oakridge", "Zentia", "Kindred", "Solace", "Arcline",
    "Purely", "Harbor & Hue", "Tidewell", "Everglow", "Maplecrest", "Novo", "Cobalt Lane", "Fernway",
    "Quillo", "Rivet", "Sunwise", "Halden", "Mirelle", "Aspenfield", "Blue Finch", "Crestline",
    "Dovetail", "Emberly", "Foxhollow", "Greyson", "Hollis", "Ivyline", "Juniper Co", "Kestrel",
    "Larkspur", "Meridian", "Nimbus", "Orchard Lane", "Pinecone", "Quartzite", "Redwood Supply",
]
STYLES = ["Premium", "Classic", "Everyday", "Ultra", "Pro", "Essential", "Deluxe", "Original",
          "Advanced", "Signature", "Basic", "Elite"]
PRICE_STEPS = [10.0 * i for i in range(1, 100)]  # WebShop's PRICE_RANGE


@dataclass
class Product:
    """One catalogue entry."""

    asin: str
    title: str
    category: str  # top-level category
    product_type: str
    breadcrumb: str  # "category › subcategory › type"
    attributes: list[str]
    options: dict[str, list[str]]  # dimension -> values, in display order
    price: float
    rating: str
    description: str
    features: list[str]
    reviews: list[str]

    @property
    def head_noun(self) -> str:
        return self.product_type.split()[-1]

    def search_text(self) -> str:
        """What the search engine indexes: title, breadcrumb, attributes and option values."""
        opts = " ".join(v for vals in self.options.values() for v in vals)
        return f"{self.title} {self.breadcrumb} {' '.join(self.attributes)} {opts}"


@dataclass
class Goal:
    """What a task asks for (WebShop's goal dict)."""

    asin: str  # the product the goal was written from
    product_type: str
    category: str
    attributes: list[str]
    options: dict[str, str]  # dimension -> wanted value
    price_upper: float
    instruction: str = ""
    query: list[str] = field(default_factory=list)  # a natural search query (used by the expert)


def _asin(rng: random.Random, taken: set[str]) -> str:
    alphabet = string.ascii_uppercase + string.digits
    while True:
        asin = "B0" + "".join(rng.choice(alphabet) for _ in range(8))
        if asin not in taken:
            taken.add(asin)
            return asin


def _title_case(s: str) -> str:
    return " ".join(w if any(c.isdigit() for c in w) else w.capitalize() for w in s.split())


def generate_catalog(seed: int, n_products: int, n_categories: int) -> list[Product]:
    """`n_products` products spread round-robin over the product types of the first
    `n_categories` categories."""
    rng = random.Random(f"shop-catalog/{seed}")
    cats = list(CATALOG_SPEC)[:n_categories]
    types = [(cat, *spec) for cat in cats for spec in CATALOG_SPEC[cat]]
    taken: set[str] = set()
    titles: set[str] = set()
    products = []
    for i in range(n_products):
        cat, sub, ptype, pool, option_spec, (lo, hi) = types[i % len(types)]
        brand = rng.choice(BRANDS)
        attrs = rng.sample(pool, rng.randint(3, 4))
        options = {}
        for dim, values in option_spec.items():
            k = rng.randint(2, min(5, len(values)))
            chosen = set(rng.sample(values, k))
            options[dim] = [v for v in values if v in chosen]  # keep the canonical order
        title = f"{brand} {rng.choice(STYLES)} {_title_case(ptype)}, {_title_case(attrs[0])} & {_title_case(attrs[1])}"
        n = 2
        base = title
        while title in titles:  # titles are unique so a title search always finds its product
            title = f"{base}, Series {n}"
            n += 1
        titles.add(title)
        price = round(max(1.0, rng.uniform(lo, hi)), 0) - 0.01
        rating = "N.A." if rng.random() < 0.15 else f"{rng.choice([3.0, 3.5, 4.0, 4.5, 5.0]):.1f}"
        products.append(Product(
            asin=_asin(rng, taken), title=title, category=cat, product_type=ptype,
            breadcrumb=f"{cat} › {sub} › {ptype}", attributes=attrs, options=options, price=price,
            rating=rating, description=_description(rng, brand, ptype, attrs),
            features=_features(rng, ptype, attrs), reviews=_reviews(rng, ptype, attrs, options),
        ))
    return products


_BENEFITS = ["made for everyday use", "tested for quality", "a customer favourite",
             "designed to last", "easy to love", "backed by our satisfaction promise"]


def _description(rng: random.Random, brand: str, ptype: str, attrs: list[str]) -> str:
    listed = ", ".join(attrs[:-1]) + f" and {attrs[-1]}"
    return (f"The {brand} {ptype} is {listed}. It is {rng.choice(_BENEFITS)}, "
            f"and it makes a thoughtful gift.")


def _features(rng: random.Random, ptype: str, attrs: list[str]) -> list[str]:
    return [f"{a.upper()}: this {ptype} is {a}, {rng.choice(_BENEFITS)}." for a in attrs]


def _reviews(rng: random.Random, ptype: str, attrs: list[str], options: dict[str, list[str]]) -> list[str]:
    values = [v for vals in options.values() for v in vals]
    texts = [
        f"Great {ptype}, really {rng.choice(attrs)}.",
        f"The {rng.choice(values)} one looks exactly as pictured." if values else "Looks as pictured.",
        "Good value for the price.",
        f"Second {ptype} I bought from this brand; {rng.choice(attrs)} as promised.",
        "Arrived quickly and well packed.",
    ]
    picked = rng.sample(texts, 2)
    return [f"{rng.randint(3, 5)} stars: {t}" for t in picked]


_OPENINGS = ["i need {a} {body}", "i'm looking for {a} {body}", "i want to buy {a} {body}",
             "find me {a} {body}", "i am searching for {a} {body}"]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _option_phrase(dim: str, value: str) -> str:
    if dim == "color":
        return f"in {value} color"
    if dim == "size":
        return f"in size {value}"
    return f"with {value} {dim}"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" and {words[-1]}"


def make_goal(product: Product, rng: random.Random) -> Goal:
    """A WebShop-style synthetic goal written from `product`."""
    attrs = rng.sample(product.attributes, min(len(product.attributes), rng.randint(1, 3)))
    options = {dim: rng.choice(vals) for dim, vals in product.options.items()}
    above = [p for p in PRICE_STEPS if p > product.price][:4]
    price_upper = sorted(rng.sample(above, 2))[1]
    if rng.random() < 0.5:  # "a long lasting lipstick" or "a lipstick that is long lasting"
        body = f"{_join(attrs)} {product.product_type}"
        words = [*attrs, product.product_type]
    else:
        body = f"{product.product_type} that is {_join(attrs)}"
        words = [product.product_type, *attrs]
    opt_text = " and ".join(_option_phrase(d, v) for d, v in options.items())
    text = rng.choice(_OPENINGS).format(a=_article(body), body=body)
    if opt_text:
        text += f" {opt_text}"
    text += f", and price lower than {price_upper:.2f} dollars"
    # the query's words in the instruction's order: the expert's search is then a monotone copy
    # of the instruction (its content words), which a small model learns far more easily than a
    # reordering; BM25 ignores order, so the results and rewards are the same either way
    query = [*words, *options.values()]
    return Goal(asin=product.asin, product_type=product.product_type, category=product.category,
                attributes=attrs, options=options, price_upper=price_upper, instruction=text,
                query=query)


def type_factor(product: Product, goal: Goal) -> float:
    """r_type: see the module docstring."""
    if product.product_type == goal.product_type:
        return 1.0
    if product.category == goal.category:
        return 0.5
    if product.head_noun == goal.product_type.split()[-1]:
        return 0.1
    return 0.0


def reward(product: Product, selected: dict[str, str], goal: Goal) -> float:
    """WebShop's reward for buying `product` with the `selected` options (dimension -> value)."""
    n_attr = sum(1 for a in goal.attributes if a in product.attributes)
    n_opt = sum(1 for d, v in goal.options.items() if selected.get(d) == v)
    in_budget = 1 if product.price <= goal.price_upper else 0
    total = (n_attr + n_opt + in_budget) / (len(goal.attributes) + len(goal.options) + 1)
    return type_factor(product, goal) * total


def satisfies(product: Product, goal: Goal) -> bool:
    """Whether buying `product` with the goal's options can earn reward 1."""
    return (product.product_type == goal.product_type
            and all(a in product.attributes for a in goal.attributes)
            and all(v in product.options.get(d, ()) for d, v in goal.options.items())
            and product.price <= goal.price_upper)
