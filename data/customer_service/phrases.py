"""The phrase and value tables that datagen.py draws from.

Value pools (names, cities, streets, products, email domains, discount-code
words, reasons, issues), the users' phrasing templates per intent and kind,
and the assistant's set replies.  Template fields in braces are filled by
``datagen._slot``; a field ending in ``_b`` is a second value of the same
kind.  datagen splits every list here into disjoint train/eval parts by a
fixed hash and draws from the lists in their order, so any edit here changes
the generated data (tests/test_datagen.py checks the committed files against a
fresh run).
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# Value pools
# --------------------------------------------------------------------------

FIRST_NAMES = [
    "maria", "james", "aisha", "chen", "liam", "sofia", "noah", "emma", "omar", "priya",
    "lucas", "hannah", "diego", "yuki", "ethan", "fatima", "oliver", "grace", "mateo", "zoe",
    "ivan", "chloe", "kwame", "nina", "samuel", "leah", "arjun", "mia", "tomas", "ava",
    "hiro", "elena", "david", "sara", "felix", "amara", "jonas", "lily", "rafael", "nora",
    "kai", "julia", "marcus", "ines", "ben", "clara", "andre", "maya", "leo", "rosa",
    "victor", "tara", "oscar", "eva", "hugo", "alice", "jamal", "ruby", "pablo", "wendy",
]
LAST_NAMES = [
    "lopez", "smith", "khan", "wang", "murphy", "rossi", "johnson", "garcia", "ali", "patel",
    "silva", "meyer", "torres", "tanaka", "brown", "hassan", "wilson", "kim", "fernandez", "clark",
    "petrov", "martin", "mensah", "novak", "davis", "cohen", "sharma", "nguyen", "costa", "lee",
    "sato", "popescu", "miller", "jensen", "wagner", "okafor", "berg", "evans", "moreno", "walsh",
    "young", "fischer", "reed", "santos", "hughes", "dubois", "ramos", "bauer", "price", "ortiz",
]
EMAIL_DOMAINS = [
    "gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me", "hotmail.com",
    "aol.com", "mail.com", "fastmail.com", "gmx.com", "zoho.com", "hey.com",
    "comcast.net", "verizon.net", "example.org", "live.com",
]
CITIES = [
    "Denver", "Austin", "Portland", "Seattle", "Boston", "Chicago", "Atlanta", "Phoenix",
    "Madison", "Boulder", "Tucson", "Raleigh", "Omaha", "Spokane", "Fresno", "Reno",
    "Savannah", "Burlington", "Asheville", "Missoula", "Boise", "Tulsa", "Richmond", "Dayton",
    "Albany", "Eugene", "Provo", "Durham", "Lincoln", "Anchorage", "Flagstaff", "Bend",
    "Sacramento", "Pittsburgh", "Nashville", "Memphis", "Louisville", "Columbus", "Santa Fe",
    "Salt Lake City", "San Diego", "Kansas City", "Des Moines", "Little Rock", "Charleston",
    "Fort Collins", "Ann Arbor", "Green Bay",
]
STREET_NAMES = [
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Birch", "Willow", "Aspen", "Juniper", "Spruce",
    "Lake", "River", "Hillside", "Meadow", "Sunset", "Highland", "Park", "Forest", "Valley",
    "Canyon", "Ridge", "Harbor", "Prairie", "Summit", "Orchard", "Brookside", "Chestnut",
    "Magnolia", "Redwood", "Sycamore", "Lincoln", "Franklin", "Jefferson", "Madison", "Walnut",
    "Church", "Mill", "Bridge", "Quarry", "Fairview",
]
STREET_SUFFIXES = ["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Boulevard", "Place", "St", "Ave", "Rd"]
PRODUCTS = [  # (name, category)
    ("trail running shoes", "footwear"), ("waterproof hiking boots", "footwear"),
    ("camp sandals", "footwear"), ("winter snow boots", "footwear"), ("approach shoes", "footwear"),
    ("wool hiking socks", "accessories"), ("insulated water bottle", "accessories"),
    ("headlamp", "accessories"), ("trekking poles", "accessories"), ("sunglasses", "accessories"),
    ("camping stove", "accessories"), ("sleeping pad", "accessories"), ("dry bags", "accessories"),
    ("down jacket", "jackets"), ("rain jacket", "jackets"), ("fleece jacket", "jackets"),
    ("softshell jacket", "jackets"), ("ski parka", "jackets"), ("windbreaker", "jackets"),
    ("insulated vest", "jackets"),
    ("2-person tent", "tents"), ("4-person tent", "tents"), ("ultralight tent", "tents"),
    ("family camping tent", "tents"), ("bivy sack", "tents"), ("hammock tent", "tents"),
    ("daypack", "backpacks"), ("65 liter backpack", "backpacks"), ("hydration pack", "backpacks"),
    ("laptop backpack", "backpacks"), ("kids backpack", "backpacks"), ("climbing pack", "backpacks"),
    ("merino base layer", "clothing"), ("hiking pants", "clothing"), ("rain pants", "clothing"),
    ("sun hoodie", "clothing"), ("running shorts", "clothing"), ("thermal leggings", "clothing"),
    ("flannel shirt", "clothing"), ("beanie", "clothing"),
]
CATEGORY_WORDS = {
    "footwear": ["footwear", "shoes", "shoe"],
    "jackets": ["jackets", "outerwear", "jacket"],
    "tents": ["tents", "shelters", "tent"],
    "backpacks": ["backpacks", "packs", "bags"],
    "clothing": ["clothing", "apparel", "clothes"],
    "accessories": ["accessories", "gear accessories", "gear"],
}
CODE_WORDS = [
    "SAVE", "SPRING", "WELCOME", "SUMMER", "FALL", "HIKE", "TRAIL", "CAMP", "VIP", "FRIEND",
    "BDAY", "FLASH", "WINTER", "EXTRA", "THANKS", "PEAK", "SUMMIT", "GEAR", "OUTDOOR", "LOYAL",
]
SIZE_WORDS = {
    "XS": ["XS", "extra small"], "S": ["S", "small"], "M": ["M", "medium"],
    "L": ["L", "large"], "XL": ["XL", "extra large"], "XXL": ["XXL", "2XL"],
}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

RETURN_REASONS = {
    "damaged": ["it arrived damaged", "it showed up broken", "the zipper was torn when it came",
                "it came with a crack"],
    "wrong_item": ["you sent the wrong item", "I got a different product than I ordered",
                   "the box had the wrong thing in it"],
    "wrong_size": ["it doesn't fit", "the size is wrong", "it's too small", "it runs too big"],
    "not_as_described": ["it looks nothing like the photos", "it isn't as described",
                         "the color is different from the listing"],
    "no_longer_needed": ["I don't need it anymore", "I ended up not needing it",
                         "it was a gift they already had"],
}
CANCEL_REASONS = {
    "changed_mind": ["I changed my mind", "I decided against it", "I don't want it after all"],
    "ordered_by_mistake": ["I ordered it by mistake", "I clicked buy by accident",
                           "I placed it twice by accident"],
    "found_better_price": ["I found it cheaper somewhere else", "I found a better price",
                           "another store has it for less"],
    "delivery_too_slow": ["the delivery is taking too long", "it won't arrive in time",
                          "shipping is too slow"],
}
REFUND_REASONS = {
    "damaged": ["it arrived damaged", "the item was broken", "it came with a crack"],
    "late_delivery": ["it arrived late", "the delivery was a week late",
                      "it showed up after the promised date"],
    "missing_item": ["an item was missing from the box", "one of the items never arrived",
                     "the package was missing a piece"],
    "price_adjustment": ["the price dropped right after I bought it", "it went on sale the next day",
                         "I was charged more than the listed price"],
}
REFUND_METHODS = {
    "original_payment": ["to my original card", "back to my credit card", "to the card I paid with"],
    "store_credit": ["as store credit", "as credit on my account", "as a store gift card"],
}
RESET_METHODS = {
    "email": ["by email", "to my inbox", "over email"],
    "sms": ["by text message", "via SMS", "as a text"],
}
TIME_WINDOWS = {
    "morning": ["in the morning", "before noon", "sometime in the morning"],
    "afternoon": ["in the afternoon", "after lunch", "sometime in the afternoon"],
    "evening": ["in the evening", "after 5pm", "sometime in the evening"],
}
PRIORITIES = {
    "urgent": ["This is urgent.", "It's an emergency.", "I need this fixed today."],
    "high": ["It's pretty important.", "Please prioritize this.", "This matters a lot to me."],
    "low": ["No rush.", "Whenever someone has time is fine.", "It's not urgent."],
}
ISSUES = [  # (user phrase, summary written by the assistant)
    ("my refund that never arrived", "Refund never arrived"),
    ("a double charge on my card", "Customer was charged twice"),
    ("a package marked delivered that I never got", "Package marked delivered but not received"),
    ("a rude experience at your store", "Complaint about an in-store experience"),
    ("a warranty claim on my tent", "Warranty claim for a tent"),
    ("my locked account", "Customer account is locked"),
    ("a billing error on my statement", "Billing error on statement"),
    ("a damaged item nobody has fixed", "Unresolved damaged item"),
    ("getting the wrong item twice", "Wrong item sent twice"),
    ("a gift card that won't work", "Gift card not working"),
    ("a bulk order for my team", "Bulk order inquiry"),
    ("missing loyalty points", "Missing loyalty points"),
    ("a broken zipper still under warranty", "Warranty claim for a broken zipper"),
    ("a return that was never processed", "Return not processed"),
    ("being charged after I cancelled", "Charged after cancellation"),
    ("a lost package claim", "Lost package claim"),
]


# --------------------------------------------------------------------------
# User phrasing templates (split per intent into disjoint train/eval sets)
# --------------------------------------------------------------------------

# tool -> list of (template, fixed_args)
SINGLE_TEMPLATES: dict[str, list[tuple[str, dict]]] = {
    "check_order_status": [
        ("Where is my order {order_id}?", {}),
        ("Can you check the status of {order_id}?", {}),
        ("{order_id} - what's the status on that one?", {}),
        ("I ordered something last week, order number {order_id}. Any update?", {}),
        ("What's going on with order {order_id}?", {}),
        ("Could you tell me whether {order_id} has been processed yet?", {}),
        ("Status check please: {order_id}", {}),
        ("Just wondering if the order I placed, {order_id}, is confirmed.", {}),
        ("Is {order_id} still processing or is it done?", {}),
        ("What items are in order {order_id}, and what's its status?", {"include_items": True}),
        ("Can you list what I bought in {order_id} and tell me where it stands?", {"include_items": True}),
        ("For {order_id}, show me the items and the current status.", {"include_items": True}),
        ("I forgot what I ordered in {order_id}; can you check it, items included?", {"include_items": True}),
    ],
    "track_shipment": [
        ("Can you track my package for order {order_id}?", {}),
        ("Where is the shipment for {order_id} right now?", {}),
        ("{order_id} was supposed to arrive yesterday, can you track it?", {}),
        ("When will my package from order {order_id} get here?", {}),
        ("Tracking info for {order_id} please.", {}),
        ("My delivery hasn't shown up. The order is {order_id}.", {}),
        ("Which carrier has {order_id} and when will it be delivered?", {}),
        ("Since I ordered {order_id} the tracking page hasn't updated, where is it?", {}),
        ("Please give me the full tracking history for {order_id}.", {"include_history": True}),
        ("Show every scan for the package in {order_id}.", {"include_history": True}),
        ("I want all the tracking events for {order_id}, not just the latest.", {"include_history": True}),
    ],
    "cancel_order": [
        ("Please cancel order {order_id}.", {}),
        ("I need to cancel {order_id}, {cancel_reason}.", {}),
        ("Cancel {order_id} for me please.", {}),
        ("{order_id} needs to be cancelled.", {}),
        ("Can I cancel the order I just placed? It's {order_id}.", {}),
        ("Because {cancel_reason}, I'd like to cancel {order_id}.", {}),
        ("Stop order {order_id}, {cancel_reason}.", {}),
        ("Is it possible to cancel {order_id} before it ships?", {}),
        ("Hey, {cancel_reason}, so please cancel my order {order_id}.", {}),
        ("Go ahead and cancel {order_id}.", {}),
    ],
    "initiate_return": [
        ("I want to return {order_id} because {return_reason}.", {}),
        ("{return_reason}, so I'd like to send back order {order_id}.", {}),
        ("Can I start a return for {order_id}? Basically {return_reason}.", {}),
        ("Return request for {order_id}: {return_reason}.", {}),
        ("I need to return {quantity} items from {order_id} since {return_reason}.", {}),
        ("Please set up a return of {quantity} units from order {order_id}; {return_reason}.", {}),
        ("Order {order_id} - {return_reason}. I want to return it.", {}),
        ("How do I send back {order_id}? {return_reason}.", {}),
        ("I'm returning {quantity} things from {order_id} because {return_reason}.", {}),
        ("Since {return_reason}, please start a return on {order_id}.", {}),
    ],
    "submit_refund": [
        ("Please refund {amount} on order {order_id}.", {}),
        ("I was told I'd get {amount} back for {order_id}, can you process that?", {}),
        ("Refund {amount} to me for {order_id} because {refund_reason}.", {}),
        ("{order_id}: {refund_reason}, so I'd like a refund of {amount}.", {}),
        ("Can you issue a {amount} refund for {order_id} {refund_method}?", {}),
        ("For order {order_id}, please refund {amount} {refund_method} since {refund_reason}.", {}),
        ("I'm owed {amount} on {order_id}.", {}),
        ("Could I get {amount} refunded for order {order_id}?", {}),
        ("Since {refund_reason}, please send {amount} back {refund_method} for {order_id}.", {}),
        ("{amount} refund on {order_id} please, {refund_reason}.", {}),
        ("The agent promised a refund of {amount} {refund_method} on {order_id}.", {}),
    ],
    "update_shipping_address": [
        ("Please change the shipping address on {order_id} to {street}, {city} {postal_code}.", {}),
        ("I moved! Ship {order_id} to {street}, {city}, {postal_code} instead.", {}),
        ("Can you send order {order_id} to {street} in {city}, zip {postal_code}?", {}),
        ("New address for {order_id}: {street}, {city} {postal_code}.", {}),
        ("{street}, {city} {postal_code} is where {order_id} should go now.", {}),
        ("Update the delivery address for {order_id} to {street}, apartment {apartment}, {city} {postal_code}.", {}),
        ("Ship {order_id} to {street} apt {apartment}, {city}, {postal_code} please.", {}),
        ("The address on {order_id} is wrong; it should be {street}, {city} {postal_code}.", {}),
        ("I'm staying at {street}, unit {apartment}, {city} {postal_code} - can {order_id} go there?", {}),
        ("Redirect {order_id} to {street}, {city}, zip code {postal_code}.", {}),
    ],
    "search_products": [
        ("Do you sell {query}?", {}),
        ("I'm looking for {query}.", {}),
        ("Show me {query} under {max_price}.", {}),
        ("Any {query} for less than {max_price}?", {}),
        ("Can you find {query} in the {category} section?", {}),
        ("Search your {category} for {query} under {max_price}.", {}),
        ("What {query} do you have?", {}),
        ("I need some {query} for a trip next month, what have you got?", {}),
        ("My budget is {max_price}; what {query} can I get?", {}),
        ("Looking in {category}: do you carry {query}?", {}),
        ("Got any {query}?", {}),
    ],
    "check_product_availability": [
        ("Is {sku} in stock?", {}),
        ("Do you have {sku} available?", {}),
        ("Can you check stock for item {sku}?", {}),
        ("Is {sku} available in size {size}?", {}),
        ("I need {sku} in {size}, do you have it?", {}),
        ("Is {sku} in stock at a store near {postal_code}?", {}),
        ("Check if {sku} in size {size} is available near {postal_code}.", {}),
        ("{sku} - any left?", {}),
        ("Before I order {sku}, can you confirm it's in stock?", {}),
        ("Can I pick up {sku} somewhere around {postal_code}?", {}),
        ("Size {size} of {sku}: is it available?", {}),
    ],
    "get_account_details": [
        ("Can you pull up my account? My email is {email}.", {}),
        ("What are my account details? I use {email}.", {}),
        ("How many loyalty points do I have? Account email {email}.", {}),
        ("{email} is my login, can you look up my account?", {}),
        ("Look up the account for {email} please.", {}),
        ("I'd like to see my profile info, it's registered under {email}.", {}),
        ("When did I join? My email's {email}.", {}),
        ("Check my account, {email}.", {}),
        ("Under {email}, what info do you have on file?", {}),
    ],
    "update_account_email": [
        ("Please change my email from {current_email} to {new_email}.", {}),
        ("I want to update my account email to {new_email}; the current one is {current_email}.", {}),
        ("My old email {current_email} no longer works, switch it to {new_email}.", {}),
        ("Replace {current_email} with {new_email} on my account.", {}),
        ("Can you set {new_email} as my new email? Right now it's {current_email}.", {}),
        ("Update email: {current_email} -> {new_email}", {}),
        ("I'm changing providers, so move my account from {current_email} to {new_email}.", {}),
        ("The account under {current_email} should use {new_email} from now on.", {}),
    ],
    "reset_password": [
        ("I forgot my password, my email is {email}.", {}),
        ("Reset the password for {email} please.", {}),
        ("Can't log in. Can you send a password reset to {email}?", {}),
        ("{email} - I need a new password.", {}),
        ("Please send a reset link for {email} {method}.", {}),
        ("I'm locked out of {email}, could you reset it {method}?", {}),
        ("Send me a password reset {method}; account is {email}.", {}),
        ("How do I reset my password? My account is {email}.", {}),
        ("My login {email} stopped working, please reset the password.", {}),
    ],
    "apply_discount_code": [
        ("Can you apply code {code} to order {order_id}?", {}),
        ("I forgot to use {code} on {order_id}.", {}),
        ("Please add the discount {code} to {order_id}.", {}),
        ("{order_id}: I have a promo code, {code}.", {}),
        ("Is it too late to use {code} for my order {order_id}?", {}),
        ("Use coupon {code} on {order_id} please.", {}),
        ("I got {code} in an email, can it go on {order_id}?", {}),
        ("Apply the promo {code} to my order, which is {order_id}.", {}),
        ("My friend gave me code {code}; please put it on {order_id}.", {}),
    ],
    "list_recent_orders": [
        ("What have I ordered recently? My email is {email}.", {}),
        ("Show my recent orders for {email}.", {}),
        ("List my last {limit} orders, account {email}.", {}),
        ("Can you show the orders on {email} since {since}?", {}),
        ("I need my order history since {since}; email is {email}.", {}),
        ("Show the last {limit} orders placed since {since} under {email}.", {}),
        ("{email} - what orders do I have?", {}),
        ("I can't find my order number. Could you list my orders? I use {email}.", {}),
        ("Just the {limit} most recent orders for {email}, please.", {}),
        ("Anything I bought after {since}? My account is {email}.", {}),
    ],
    "escalate_to_human": [
        ("I want to talk to a real person about {issue}.", {}),
        ("Please get me a human, it's about {issue}.", {}),
        ("Connect me with an agent about {issue} on order {order_id}.", {}),
        ("I need a human to look at {order_id}, it's about {issue}. {priority}", {}),
        ("Escalate this please: {issue}.", {}),
        ("Transfer me to a human about {issue}. {priority}", {}),
        ("No more bots, I want a person to handle {issue}.", {}),
        ("Can a manager contact me regarding {issue}? {priority}", {}),
        ("About {issue} on {order_id}: I need a supervisor.", {}),
    ],
    "schedule_callback": [
        ("Can someone call me at {phone} on {date} {time_window}?", {}),
        ("Please schedule a callback to {phone} for {date}, {time_window}.", {}),
        ("I'd like a phone call on {date} {time_window}. My number is {phone}.", {}),
        ("Call me {time_window} on {date} at {phone}, please.", {}),
        ("{phone} - can I get a call back {time_window} on {date}?", {}),
        ("Have an agent ring {phone} on {date} {time_window} about order {order_id}.", {}),
        ("Book me a callback {time_window} on {date} to discuss {order_id}; my number is {phone}.", {}),
        ("On {date}, {time_window}, could you call {phone}?", {}),
        ("I prefer talking on the phone: {phone}, {date}, {time_window}.", {}),
    ],
}

# Parallel calls of the same tool: fields of the second call end in "_b".
PARALLEL_SAME_TEMPLATES: dict[str, list[str]] = {
    "track_shipment": [
        "Can you track {order_id} and {order_id_b}?",
        "Where are my packages {order_id} and {order_id_b}?",
        "I have two deliveries coming, {order_id} and {order_id_b}. Where are they?",
        "Tracking for {order_id} plus {order_id_b} please.",
        "Both {order_id} and {order_id_b} are late, can you track them?",
        "Please track order {order_id} and also order {order_id_b}.",
    ],
    "check_order_status": [
        "What's the status of {order_id} and {order_id_b}?",
        "Check {order_id} and {order_id_b} for me please.",
        "I placed {order_id} and {order_id_b} last week, are they processed?",
        "Status of both orders please: {order_id}, {order_id_b}.",
        "Can you look up orders {order_id} and {order_id_b}?",
        "Any update on {order_id}? And on {order_id_b}?",
    ],
    "check_product_availability": [
        "Are {sku} and {sku_b} in stock?",
        "Can you check stock for {sku} and {sku_b}?",
        "I want {sku} and {sku_b}; are both available?",
        "Do you have {sku} or {sku_b} right now?",
        "Stock check on two items: {sku}, {sku_b}.",
    ],
    "search_products": [
        "Do you sell {query} and {query_b}?",
        "I'm looking for {query} and also {query_b}.",
        "Show me {query}, and {query_b} too.",
        "Search for {query} and {query_b} please.",
        "What {query} and what {query_b} do you have?",
    ],
    "cancel_order": [
        "Please cancel {order_id} and {order_id_b}.",
        "Cancel both {order_id} and {order_id_b}, I ordered them by accident.",
        "I need orders {order_id} and {order_id_b} cancelled.",
        "Stop {order_id} as well as {order_id_b}.",
        "Can you cancel {order_id}? {order_id_b} too.",
    ],
}

CONNECTORS = ["Also,", "And", "Oh and", "Separately,", "One more thing:", "Plus,", "While you're at it,",
              "Additionally,", "Another thing:", "And also", "Besides that,", "On top of that,"]
PREFIXES = ["Hi,", "Hello,", "Hey there,", "Good morning,", "Hi there!", "Quick question:",
            "Hello, this is {name}.", "Hi, {name} here.", "Excuse me,", "Hey,", "Hiya,",
            "Good evening,", "Hi team,", "Morning!", "Hello again,", "Hi, it's {name}."]
SUFFIXES = ["Thanks!", "Thank you.", "Thanks in advance.", "Appreciate it.", "thx", "Cheers.",
            "Much appreciated!", "Please help.", "Ty!", "Thanks so much.", "Thanks a lot.", "Many thanks."]

# Missing-argument intents: (template, missing group)
MISSING_TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "check_order_status": [
        ("Where is my order?", "order_id"), ("Can you check my order status?", "order_id"),
        ("What's happening with the order I placed?", "order_id"),
        ("Has my order been processed yet?", "order_id"), ("I want an update on my purchase.", "order_id"),
        ("Is my order confirmed?", "order_id"),
    ],
    "track_shipment": [
        ("Where's my package?", "order_id"), ("Can you track my delivery?", "order_id"),
        ("My parcel hasn't arrived, can you track it?", "order_id"),
        ("When will my shipment get here?", "order_id"), ("Tracking update please.", "order_id"),
    ],
    "cancel_order": [
        ("I need to cancel my order.", "order_id"),
        ("Please cancel my last purchase, {cancel_reason}.", "order_id"),
        ("Cancel my order please.", "order_id"), ("Because {cancel_reason}, I want to cancel.", "order_id"),
    ],
    "initiate_return": [
        ("I want to return something because {return_reason}.", "order_id"),
        ("How do I send back an item? {return_reason}.", "order_id"),
        ("I'd like to return order {order_id}.", "return_reason"),
        ("Start a return for {order_id} please.", "return_reason"),
        ("Can {order_id} be returned?", "return_reason"),
    ],
    "submit_refund": [
        ("I want a refund for order {order_id}.", "amount"),
        ("Can you refund my order {order_id}?", "amount"),
        ("Please refund me {amount}.", "order_id"), ("I'm owed a {amount} refund.", "order_id"),
        ("Refund {order_id}, {refund_reason}.", "amount"),
    ],
    "update_shipping_address": [
        ("I need to change the shipping address on {order_id}.", "address"),
        ("Can I update where {order_id} is going?", "address"),
        ("Ship my order to {street}, {city} {postal_code} instead.", "order_id"),
        ("My new address is {street}, {city} {postal_code}, please update my order.", "order_id"),
        ("Wrong address on {order_id}!", "address"),
    ],
    "search_products": [
        ("Can you search the catalog for me?", "query"), ("I want to browse some products.", "query"),
        ("Help me find something to buy.", "query"), ("What do you have under {max_price}?", "query"),
    ],
    "check_product_availability": [
        ("Is this item in stock?", "sku"), ("Do you have it in size {size}?", "sku"),
        ("Can you check if the product is available?", "sku"),
        ("Is it available near {postal_code}?", "sku"),
    ],
    "get_account_details": [
        ("Can you look up my account?", "email"), ("How many loyalty points do I have?", "email"),
        ("What details do you have on my profile?", "email"), ("When did I sign up?", "email"),
    ],
    "update_account_email": [
        ("I want to change the email on {current_email}.", "new_email"),
        ("Please update the email for {current_email}.", "new_email"),
        ("{current_email} is my old address, I need to change it.", "new_email"),
        ("I have a new email address to put on my account, {current_email}.", "new_email"),
    ],
    "reset_password": [
        ("I forgot my password.", "email"), ("I can't log in, please reset my password.", "email"),
        ("Send me a password reset link.", "email"), ("Locked out of my account, help!", "email"),
    ],
    "apply_discount_code": [
        ("Please apply {code} to my order.", "order_id"), ("Can I use {code}?", "order_id"),
        ("I have a promo code for {order_id}.", "code"),
        ("I forgot to add a coupon to {order_id}.", "code"),
    ],
    "list_recent_orders": [
        ("Show me my recent orders.", "email"), ("What did I buy lately?", "email"),
        ("List my last {limit} orders.", "email"), ("I need my order history.", "email"),
    ],
    "escalate_to_human": [
        ("I want to talk to a human.", "issue"), ("Get me a real person.", "issue"),
        ("Transfer me to an agent please.", "issue"), ("Can I speak to a manager?", "issue"),
    ],
    "schedule_callback": [
        ("Can someone call me {time_window} on {date}?", "phone"),
        ("I'd like a callback on {date} {time_window}.", "phone"),
        ("Please call me at {phone}.", "when"), ("Can an agent phone me? My number is {phone}.", "when"),
    ],
}

FOLLOWUPS: dict[str, list[str]] = {
    "order_id": ["It's {order_id}.", "{order_id}", "Sure, it's {order_id}.", "The order number is {order_id}.",
                 "Oh right, {order_id}.", "order {order_id}", "Sorry, {order_id}.", "I think it's {order_id}."],
    "amount": ["{amount}", "{amount}, please.", "It was {amount}.", "I paid {amount} for it.",
               "Refund {amount}.", "The full {amount}."],
    "return_reason": ["It's because {return_reason}.", "{return_reason}", "Well, {return_reason}.",
                      "Basically {return_reason}."],
    "address": ["{street}, {city} {postal_code}", "It's {street}, {city}, {postal_code}.",
                "New address is {street}, {city} {postal_code}.", "Send it to {street}, {city} {postal_code}.",
                "{street} in {city}, zip {postal_code}."],
    "query": ["{query}", "I'm after {query}.", "Looking for {query}.", "Some {query}.", "{query}, please."],
    "sku": ["{sku}", "It's {sku}.", "The item number is {sku}.", "SKU is {sku}", "Item {sku}."],
    "email": ["{email}", "It's {email}.", "My email is {email}.", "I use {email}.", "Sure: {email}"],
    "new_email": ["{new_email}", "Please use {new_email}.", "Change it to {new_email}.",
                  "The new one is {new_email}."],
    "code": ["{code}", "The code is {code}.", "It's {code}.", "Code {code}."],
    "issue": ["It's about {issue}.", "Regarding {issue}.", "I need help with {issue}.",
              "It's {issue}.", "About {issue}."],
    "phone": ["{phone}", "You can reach me at {phone}.", "My number is {phone}.", "Call {phone}."],
    "when": ["{date}, {time_window}.", "{date} {time_window} works.", "How about {date} {time_window}?",
             "Let's do {date}, {time_window}."],
}

ASKS: dict[str, list[str]] = {
    "order_id": ["Sure, what's your order number? It starts with ORD- followed by six digits.",
                 "I can help with that. Could you share the order number (ORD- and six digits)?",
                 "Happy to check. Which order is it? Please give me the order id."],
    "amount": ["How much should I refund for that order?",
               "Sure. What amount should be refunded?"],
    "return_reason": ["What's the reason for the return: damaged, wrong item, wrong size, not as described, or no longer needed?",
                      "Sure. Why are you returning it?"],
    "address": ["What's the new address? Please include street, city and ZIP code.",
                "Sure, what street, city and ZIP code should it go to?"],
    "query": ["Sure, what are you looking for?", "Happy to help. What product should I search for?"],
    "sku": ["Which item do you mean? Please share the SKU (SKU- followed by five digits).",
            "Could you give me the item's SKU? It's on the product page."],
    "email": ["Sure. What's the email address on your account?",
              "I can help. Which email is the account registered under?"],
    "new_email": ["What new email address should I use?", "Sure, what's the new email?"],
    "code": ["Sure, what's the code?", "Which discount code would you like to apply?"],
    "issue": ["I can connect you with a person. What's the issue, so I can pass it along?",
              "Sure. Briefly, what do you need help with?"],
    "phone": ["Sure. What phone number should we call?", "Which number should the agent call?"],
    "when": ["Which date, and morning, afternoon or evening?",
             "Sure. What day and time of day work best for you?"],
}
# Missing group -> template fields it supplies.
GROUP_FIELDS = {"address": ["street", "city", "postal_code"], "when": ["date", "time_window"]}

MULTI_TEMPLATES: dict[str, list[str]] = {
    "status_refund": [
        "Can you check {order_id} and refund me {amount} if it was delivered?",
        "Please look at order {order_id}; if it arrived, I'd like {amount} back because {refund_reason}.",
        "{order_id} - was it delivered? If so, refund {amount}.",
        "If {order_id} shows delivered, please issue a {amount} refund.",
        "Check whether {order_id} was delivered and then refund {amount} {refund_method}.",
        "Since {refund_reason}, refund {amount} on {order_id}, but first confirm it was delivered.",
    ],
    "status_track": [
        "Has {order_id} shipped? If so, where is it now?",
        "Check if {order_id} went out, and track it if it did.",
        "Is order {order_id} on its way? I'd like tracking too.",
        "What's the status of {order_id}, and where's the package?",
        "If {order_id} has shipped, please track it for me.",
    ],
    "status_cancel": [
        "If {order_id} hasn't shipped yet, please cancel it.",
        "Check {order_id} and cancel it if it's still processing.",
        "Can you see whether {order_id} is still processing? If yes, cancel it, {cancel_reason}.",
        "Cancel {order_id} if it's not out the door yet.",
        "{cancel_reason}, so if {order_id} hasn't shipped please cancel it.",
    ],
    "status_return": [
        "{order_id} arrived but {return_reason}. Can you check it and start a return?",
        "Please confirm {order_id} was delivered and set up a return; {return_reason}.",
        "Look up {order_id} and start a return, {return_reason}.",
        "Check {order_id} for me - {return_reason}, so I want to send it back.",
        "If {order_id} shows delivered, start a return because {return_reason}.",
    ],
    "status_discount": [
        "Is {order_id} still processing? If so, apply code {code}.",
        "Check {order_id} and add {code} if it's not too late.",
        "If {order_id} hasn't shipped, can you use {code} on it?",
        "See if {order_id} can still take the promo {code}.",
        "Look up {order_id}, and if possible apply {code}.",
    ],
    "list_track": [
        "Where's my most recent order? My email is {email}.",
        "Can you find my latest order and track it? I use {email}.",
        "I don't have my order number, but my email is {email}. Where is my last package?",
        "Track my newest order please, account {email}.",
        "{email} - can you see where my latest order is?",
    ],
    "search_availability": [
        "Do you have {query} in size {size}?",
        "Find me {query} and check if size {size} is in stock.",
        "I want {query}, size {size}. Is one available?",
        "Look for {query} and see whether the top result comes in {size}.",
        "Any {query} in {size} in stock?",
    ],
    "account_update": [
        "Please check my account {current_email} and change its email to {new_email}.",
        "Can you find the account under {current_email}? I want to switch it to {new_email}.",
        "Look up {current_email} and update the email to {new_email}.",
        "I think my account is {current_email}; if so, move it to {new_email}.",
        "Verify the account {current_email} exists, then set the email to {new_email}.",
    ],
    "account_reset": [
        "I can't log in. My email is {email}; can you check my account and send a reset link?",
        "Please verify my account {email} and reset my password.",
        "Look up {email} and send me a password reset.",
        "Is there an account under {email}? If so, reset the password.",
        "Check my account {email} - I need to reset my password {method}.",
    ],
}

ERROR_TEMPLATES: dict[str, list[str]] = {
    "alt_order": [
        "Where is my order? It's {order_id}, or maybe {order_id_b}, I'm not sure.",
        "Can you check {order_id}? If that's wrong, try {order_id_b}.",
        "My order number is either {order_id} or {order_id_b}. What's the status?",
        "I think the order is {order_id}, but it could be {order_id_b}. Any update?",
        "Status for {order_id} please (or {order_id_b}, I mix them up).",
    ],
    "alt_email": [
        "Look up my account, it's {email}, or maybe {email_b}.",
        "I'm {email}, though I may have signed up with {email_b}. Can you find my account?",
        "Check my account: {email} or {email_b}.",
        "Pull up my profile. Try {email} first, then {email_b}.",
        "My account email is {email}, unless it's the old one, {email_b}.",
    ],
    "alt_code": [
        "Apply {code} to {order_id}, or {code_b} if that one doesn't work.",
        "Can you use {code} on {order_id}? Backup code is {code_b}.",
        "Try code {code} on order {order_id}; if not, {code_b}.",
        "I have two codes, {code} and {code_b}. Please put one on {order_id}.",
        "Use {code} for {order_id}, and if it fails use {code_b}.",
    ],
    "alt_window": [
        "Call me at {phone} on {date} {time_window}, or {time_window_b} if that's full.",
        "Book a callback to {phone} for {date}, {time_window}; {time_window_b} also works.",
        "Can someone ring {phone} on {date}? Ideally {time_window}, otherwise {time_window_b}.",
        "Schedule a call on {date} {time_window} or {time_window_b} at {phone}.",
        "{phone}, on {date} - {time_window} is best, {time_window_b} is fine too.",
    ],
}

REFUSAL_PROMPTS: dict[str, list[str]] = {
    "weather": ["What's the weather going to be like tomorrow?", "Will it rain this weekend in Denver?",
                "Is it going to snow in the mountains on Friday?", "How hot will it get today?",
                "What's the forecast for my camping trip next week?"],
    "joke": ["Tell me a joke.", "Can you tell me something funny?", "Know any good puns about camping?",
             "Make me laugh, I'm bored.", "Write me a limerick about hiking boots."],
    "coding": ["Can you help me fix my Python code?", "How do I reverse a list in JavaScript?",
               "Write a SQL query that counts users by country.", "Why does my React app keep crashing?",
               "Explain recursion with an example in Java."],
    "legal": ["Can I sue my landlord for not fixing the heater?", "Is it legal to fly a drone over a national park?",
              "Do I need a lawyer for a small claims case?", "How do I write a will?",
              "What are my rights if my employer doesn't pay overtime?"],
    "medical": ["I twisted my ankle, should I see a doctor?", "What should I take for altitude sickness?",
                "How do I treat a bee sting?", "Is this rash from poison ivy?",
                "How much ibuprofen can I take at once?"],
    "competitor": ["Is REI's return policy better than yours?", "Can you recommend a Patagonia jacket?",
                   "Where can I buy a North Face tent cheaper?", "Do you price match Amazon?",
                   "Which is better, Columbia or Arc'teryx boots?"],
    "general": ["Who won the World Cup in 2018?", "What's the capital of Australia?",
                "How far is the moon from Earth?", "Who wrote Pride and Prejudice?",
                "How many bones are in the human body?"],
    "homework": ["Solve 3x + 7 = 22 for me.", "Can you write my history essay on the Civil War?",
                 "What's the derivative of x squared times sine x?", "Summarize chapter 4 of my biology textbook.",
                 "Help me with my chemistry homework on moles."],
    "travel": ["Book me a flight to Seattle next Friday.", "Can you reserve a campsite at Yosemite?",
               "Find me a hotel in Moab for the weekend.", "What's the best hiking trail in Colorado?",
               "Rent me a car in Salt Lake City."],
    "finance": ["Should I buy Tesla stock?", "Is bitcoin a good investment right now?",
                "How do I file my taxes?", "Can you lower my credit card interest rate?",
                "What's a good savings account?"],
    "creative": ["Write a poem about the ocean.", "Can you write a birthday message for my mom?",
                 "Draft a cover letter for a marketing job.", "Translate 'good morning' into Japanese.",
                 "Write a short story about a dragon."],
    "personal": ["My girlfriend broke up with me, what should I do?", "What should I cook for dinner tonight?",
                 "Can you help me plan my wedding?", "What movie should I watch tonight?",
                 "How do I get my cat to stop scratching the couch?"],
}
REFUSAL_TOPICS = {
    "weather": "weather forecasts", "joke": "jokes", "coding": "coding questions",
    "legal": "legal advice", "medical": "medical advice", "competitor": "other stores' products",
    "general": "general trivia", "homework": "homework", "travel": "travel bookings",
    "finance": "financial advice", "creative": "writing requests", "personal": "personal advice",
}
REFUSAL_REPLIES = [
    "Sorry, I can't help with {topic}. I can help with your Acme Outfitters orders, shipping, returns, refunds, account or products.",
    "I'm only able to help with Acme Outfitters orders, returns, refunds, accounts and products, so I can't help with "
    "{topic}. Is there anything about an order I can do?",
    "That's outside what I can do here; I don't handle {topic}. I'm happy to help with an order, a return, a refund or your account.",
    "Sorry, {topic} isn't something I can help with. If you have a question about an Acme Outfitters order or product, just ask!",
]

# A general assistant's system prompt in other domains' conversations (None: no system message).
GENERIC_SYSTEM_PROMPTS = [
    None,  # no system message
    "You are a helpful assistant.",
    "You are a helpful assistant with access to functions. Call them when they help answer the user.",
    "Answer the user's request. Use one of the provided functions when it fits; otherwise reply in text.",
]

# Replies where no listed tool fits ({caps}: what the listed tools do), and where the Acme tool a
# request needs is not in the conversation's list ({cap}: what that tool does).
NONE_FIT_REPLIES = [
    "I can't do that with the functions I have here: they only {caps}.",
    "None of the available functions can help with that; they {caps}.",
    "Sorry, there's no function here for that. I can {caps}, if that helps.",
]
ABSENT_REPLIES = [
    "Sorry, I can't {cap} right now: that isn't one of the tools I have in this chat. I can {caps}.",
    "I don't have a way to {cap} here, so I can't do that for you. I can {caps}, though.",
    "That's not something I can do at the moment: I have no tool to {cap}. I can still {caps}.",
]
