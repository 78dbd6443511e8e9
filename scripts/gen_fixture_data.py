#!/usr/bin/env python3
"""Write the staging-like source database that fixtures/ is refreshed from.

It holds the NetPoint test schema and a small, realistic data set, changelog
included. The committed fixtures are not written by hand: load this output into
an empty database and let the tool regenerate them (README.md, "Fixtures"):

    python3 scripts/gen_fixture_data.py /tmp/netpoint-source.sql
    createdb netpoint_source && psql -v ON_ERROR_STOP=1 -d netpoint_source -f /tmp/netpoint-source.sql
    cargo xtask seed-dev --refresh --source postgres://.../netpoint_source --source-media fixtures/media

The output is a plain SQL file in the layout of a `pg_dump --no-owner
--no-privileges` dump, so that it loads with psql as any user that owns the
target database.  Everything below is fixed: running the script twice gives
byte-identical output.

Image paths in the data (extras_imageattachment.image, dcim_devicetype
front_image/rear_image) and the image sizes refer to the files committed under
fixtures/media/; keep the two in step (fixtures/media.sha256 lists them).

Usage (from the repository root):

    python3 scripts/gen_fixture_data.py OUTPUT
"""

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import random
import sys
import uuid

if len(sys.argv) != 2:
    sys.exit("usage: python3 scripts/gen_fixture_data.py OUTPUT.sql")
OUT = sys.argv[1]

rng = random.Random(20240517)
EPOCH = dt.datetime(2023, 1, 9, 0, 0, 0, tzinfo=dt.timezone.utc)


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def h8(*parts):
    return hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()[:8]


def at(days, seconds=0, micro=None):
    t = EPOCH + dt.timedelta(days=days, seconds=seconds)
    if micro is None:
        micro = int(h8(days, seconds), 16) % 1000000
    return t.replace(microsecond=micro)


def ts(t):
    if t is None:
        return None
    s = t.strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        s += (".%06d" % t.microsecond).rstrip("0")
    return s + "+00"


def jsonb_order(v):
    """Order object keys the way jsonb stores them (shorter keys first)."""
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return {k: jsonb_order(v[k]) for k in keys}
    if isinstance(v, list):
        return [jsonb_order(x) for x in v]
    return v


def iso(t):
    return t.isoformat().replace("+00:00", "Z")


class Raw(str):
    """A value written to COPY as-is (already in PostgreSQL text format)."""


def copy_value(v):
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, (dict, list)):
        v = json.dumps(jsonb_order(v), ensure_ascii=False)
    elif isinstance(v, dt.datetime):
        v = ts(v)
    v = str(v)
    return (v.replace("\\", "\\\\").replace("\n", "\\n")
             .replace("\r", "\\r").replace("\t", "\\t"))


def slugify(s):
    out = []
    for ch in s.lower():
        if ch.isalnum() and ch.isascii():
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    return "".join(out).strip("-")


def ident(name):
    return '"%s"' % name if name in ("position", "time") else name


# --------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------

NATURAL = "COLLATE public.natural_sort"

TABLES = {}      # name -> dict(cols=[(name, decl)], checks=[...], comment, colcomments, identity)
ORDER = []


def table(name, cols, checks=(), comment=None, colcomments=None, identity="id"):
    TABLES[name] = dict(cols=list(cols), checks=list(checks), comment=comment,
                        colcomments=colcomments or {}, identity=identity, rows=[])
    ORDER.append(name)


def stamps():
    return [("created", "timestamp with time zone"),
            ("last_updated", "timestamp with time zone")]


CFD = ("custom_field_data", "jsonb DEFAULT '{}'::jsonb NOT NULL")

table("django_content_type", [
    ("id", "integer NOT NULL"),
    ("app_label", "character varying(100) NOT NULL"),
    ("model", "character varying(100) NOT NULL"),
])

table("django_migrations", [
    ("id", "bigint NOT NULL"),
    ("app", "character varying(255) NOT NULL"),
    ("name", "character varying(255) NOT NULL"),
    ("applied", "timestamp with time zone NOT NULL"),
])

table("django_session", [
    ("session_key", "character varying(40) NOT NULL"),
    ("session_data", "text NOT NULL"),
    ("expire_date", "timestamp with time zone NOT NULL"),
], identity=None)

table("auth_group", [
    ("id", "integer NOT NULL"),
    ("name", "character varying(150) NOT NULL"),
])

table("auth_permission", [
    ("id", "integer NOT NULL"),
    ("name", "character varying(255) NOT NULL"),
    ("content_type_id", "integer NOT NULL"),
    ("codename", "character varying(100) NOT NULL"),
])

table("users_user", [
    ("id", "bigint NOT NULL"),
    ("password", "character varying(128) NOT NULL"),
    ("last_login", "timestamp with time zone"),
    ("is_superuser", "boolean NOT NULL"),
    ("username", "character varying(150) NOT NULL"),
    ("first_name", "character varying(150) NOT NULL"),
    ("last_name", "character varying(150) NOT NULL"),
    ("email", "character varying(254) NOT NULL"),
    ("is_staff", "boolean NOT NULL"),
    ("is_active", "boolean NOT NULL"),
    ("date_joined", "timestamp with time zone NOT NULL"),
], comment="Login accounts, human and service.")

table("users_user_groups", [
    ("id", "bigint NOT NULL"),
    ("user_id", "bigint NOT NULL"),
    ("group_id", "integer NOT NULL"),
])

table("users_token", [
    ("id", "bigint NOT NULL"),
    ("created", "timestamp with time zone NOT NULL"),
    ("expires", "timestamp with time zone"),
    ("last_used", "timestamp with time zone"),
    ("key", "character varying(40) NOT NULL"),
    ("write_enabled", "boolean NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("allowed_ips", "cidr[]"),
    ("user_id", "bigint NOT NULL"),
], checks=[("users_token_key_check", "(((key)::text ~ '^[0-9a-f]{40}$'::text))")],
    comment="REST API tokens. The key is a secret and is stored in clear.",
    colcomments={"allowed_ips": "If set, the token is only accepted from these networks."})

table("tenancy_tenantgroup", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL"),
    ("slug", "character varying(100) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
])

table("tenancy_tenant", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL %s" % NATURAL),
    ("slug", "character varying(100) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("comments", "text NOT NULL"),
    ("group_id", "bigint"),
])

MPTT = [("lft", "integer NOT NULL"), ("rght", "integer NOT NULL"),
        ("tree_id", "integer NOT NULL"), ("level", "integer NOT NULL")]


def mptt_checks(t):
    return [("%s_%s_check" % (t, c), "((%s >= 0))" % c) for c, _ in MPTT]


table("dcim_region", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL"),
    ("slug", "character varying(100) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("parent_id", "bigint"),
    *MPTT,
], checks=mptt_checks("dcim_region"),
    comment="Geographic hierarchy (nested set: lft/rght/tree_id/level).")

table("dcim_site", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL %s" % NATURAL),
    ("slug", 'character varying(100) NOT NULL COLLATE pg_catalog."C"'),
    ("status", "character varying(50) NOT NULL"),
    ("facility", "character varying(50) NOT NULL"),
    ("time_zone", "character varying(63) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("physical_address", "character varying(200) NOT NULL"),
    ("shipping_address", "character varying(200) NOT NULL"),
    ("latitude", "numeric(8,6)"),
    ("longitude", "numeric(9,6)"),
    ("comments", "text NOT NULL"),
    ("region_id", "bigint"),
    ("tenant_id", "bigint"),
], checks=[
    ("dcim_site_latitude_check", "(((latitude >= ('-90'::integer)::numeric) AND (latitude <= (90)::numeric)))"),
    ("dcim_site_longitude_check", "(((longitude >= ('-180'::integer)::numeric) AND (longitude <= (180)::numeric)))"),
], comment="A building or campus where equipment is installed.",
    colcomments={"slug": "URL-safe identifier; compared bytewise (C collation).",
                 "name": "Display name, ordered naturally (DC2 before DC10)."})

table("dcim_location", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL %s" % NATURAL),
    ("slug", "character varying(100) NOT NULL"),
    ("status", "character varying(50) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("site_id", "bigint NOT NULL"),
    ("parent_id", "bigint"),
    ("tenant_id", "bigint"),
    *MPTT,
], checks=mptt_checks("dcim_location"))

table("dcim_rack", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL %s" % NATURAL),
    ("facility_id", "character varying(50)"),
    ("status", "character varying(50) NOT NULL"),
    ("serial", "character varying(50) NOT NULL"),
    ("asset_tag", "character varying(50)"),
    ("width", "smallint NOT NULL"),
    ("u_height", "smallint NOT NULL"),
    ("starting_unit", "smallint NOT NULL"),
    ("desc_units", "boolean NOT NULL"),
    ("outer_depth", "smallint"),
    ("comments", "text NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("site_id", "bigint NOT NULL"),
    ("location_id", "bigint"),
    ("tenant_id", "bigint"),
], checks=[
    ("dcim_rack_u_height_check", "((u_height >= 0))"),
    ("dcim_rack_starting_unit_check", "((starting_unit >= 0))"),
    ("dcim_rack_width_check", "((width >= 0))"),
    ("dcim_rack_outer_depth_check", "((outer_depth >= 0))"),
])

table("dcim_manufacturer", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL"),
    ("slug", "character varying(100) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
])

table("dcim_platform", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL"),
    ("slug", "character varying(100) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("manufacturer_id", "bigint"),
])

table("dcim_devicerole", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL"),
    ("slug", "character varying(100) NOT NULL"),
    ("color", "character varying(6) NOT NULL"),
    ("vm_role", "boolean NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
], checks=[("dcim_devicerole_color_check", "(((color)::text ~ '^[0-9a-f]{6}$'::text))")])

table("dcim_devicetype", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("model", "character varying(100) NOT NULL"),
    ("slug", "character varying(100) NOT NULL"),
    ("part_number", "character varying(50) NOT NULL"),
    ("u_height", "numeric(4,1) NOT NULL"),
    ("is_full_depth", "boolean NOT NULL"),
    ("airflow", "character varying(50) NOT NULL"),
    ("weight", "numeric(8,2)"),
    ("weight_unit", "character varying(50) NOT NULL"),
    ("front_image", "character varying(100) NOT NULL"),
    ("rear_image", "character varying(100) NOT NULL"),
    ("comments", "text NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("manufacturer_id", "bigint NOT NULL"),
], checks=[
    ("dcim_devicetype_u_height_check", "((u_height >= (0)::numeric))"),
    ("dcim_devicetype_weight_check", "((weight >= (0)::numeric))"),
], colcomments={"front_image": "Path relative to MEDIA_ROOT, or empty.",
                "rear_image": "Path relative to MEDIA_ROOT, or empty."})

table("dcim_device", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("local_context_data", "jsonb"),
    ("name", "character varying(64) %s" % NATURAL),
    ("serial", "character varying(50) NOT NULL"),
    ("asset_tag", "character varying(50)"),
    ("position", "numeric(4,1)"),
    ("face", "character varying(50) NOT NULL"),
    ("status", "character varying(50) NOT NULL"),
    ("airflow", "character varying(50) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("comments", "text NOT NULL"),
    ("device_type_id", "bigint NOT NULL"),
    ("role_id", "bigint NOT NULL"),
    ("platform_id", "bigint"),
    ("site_id", "bigint NOT NULL"),
    ("location_id", "bigint"),
    ("rack_id", "bigint"),
    ("tenant_id", "bigint"),
    ("primary_ip4_id", "bigint"),
    ("primary_ip6_id", "bigint"),
    ("interface_count", "bigint DEFAULT 0 NOT NULL"),
], checks=[("dcim_device_position_check", '(("position" >= 0.5))')],
    comment="Physical devices. Unnamed devices (name IS NULL) are allowed.",
    colcomments={"primary_ip4_id": "Management address; points back into ipam_ipaddress.",
                 "local_context_data": "Free-form configuration context merged over site defaults."})

table("dcim_interface", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(64) NOT NULL %s" % NATURAL),
    ("label", "character varying(64) NOT NULL"),
    ("type", "character varying(50) NOT NULL"),
    ("enabled", "boolean NOT NULL"),
    ("mgmt_only", "boolean NOT NULL"),
    ("mtu", "integer"),
    ("mac_address", "macaddr"),
    ("speed", "integer"),
    ("duplex", "character varying(50)"),
    ("mode", "character varying(50) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("mark_connected", "boolean NOT NULL"),
    ("cable_end", "character varying(1) NOT NULL"),
    ("device_id", "bigint NOT NULL"),
    ("lag_id", "bigint"),
    ("parent_id", "bigint"),
    ("untagged_vlan_id", "bigint"),
    ("vrf_id", "bigint"),
    ("cable_id", "bigint"),
], checks=[
    ("dcim_interface_mtu_check", "((mtu >= 0))"),
    ("dcim_interface_speed_check", "((speed >= 0))"),
])

table("dcim_cable", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("type", "character varying(50) NOT NULL"),
    ("status", "character varying(50) NOT NULL"),
    ("label", "character varying(100) NOT NULL"),
    ("color", "character varying(6) NOT NULL"),
    ("length", "numeric(8,2)"),
    ("length_unit", "character varying(50) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("comments", "text NOT NULL"),
    ("tenant_id", "bigint"),
    ("a_interface_id", "bigint NOT NULL"),
    ("b_interface_id", "bigint NOT NULL"),
], checks=[
    ("dcim_cable_length_check", "((length >= (0)::numeric))"),
    ("dcim_cable_distinct_ends", "((a_interface_id <> b_interface_id))"),
], comment="Point-to-point cables between two interfaces.",
    colcomments={"a_interface_id": "A end; the interface also points back here through cable_id."})

table("ipam_vrf", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL"),
    ("rd", "character varying(21)"),
    ("enforce_unique", "boolean NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("comments", "text NOT NULL"),
    ("tenant_id", "bigint"),
])

table("ipam_vlan", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("vid", "smallint NOT NULL"),
    ("name", "character varying(64) NOT NULL"),
    ("status", "character varying(50) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("comments", "text NOT NULL"),
    ("site_id", "bigint"),
    ("tenant_id", "bigint"),
], checks=[("ipam_vlan_vid_check", "(((vid >= 1) AND (vid <= 4094)))")])

table("ipam_prefix", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("prefix", "cidr NOT NULL"),
    ("status", "character varying(50) NOT NULL"),
    ("is_pool", "boolean NOT NULL"),
    ("mark_utilized", "boolean NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("comments", "text NOT NULL"),
    ("_depth", "integer DEFAULT 0 NOT NULL"),
    ("_children", "integer DEFAULT 0 NOT NULL"),
    ("site_id", "bigint"),
    ("vlan_id", "bigint"),
    ("vrf_id", "bigint"),
    ("tenant_id", "bigint"),
], checks=[("ipam_prefix__depth_check", "((_depth >= 0))"),
           ("ipam_prefix__children_check", "((_children >= 0))")])

table("ipam_ipaddress", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("address", "inet NOT NULL"),
    ("status", "character varying(50) NOT NULL"),
    ("role", "character varying(50) NOT NULL"),
    ("dns_name", "character varying(255) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
    ("comments", "text NOT NULL"),
    ("assigned_object_type_id", "integer"),
    ("assigned_object_id", "bigint"),
    ("nat_inside_id", "bigint"),
    ("vrf_id", "bigint"),
    ("tenant_id", "bigint"),
], checks=[("ipam_ipaddress_assigned_object_id_check", "((assigned_object_id >= 0))")],
    colcomments={"assigned_object_id": "Generic relation: row id in the table named by assigned_object_type_id."})

table("extras_tag", [
    ("id", "bigint NOT NULL"), *stamps(),
    ("name", "character varying(100) NOT NULL"),
    ("slug", "character varying(100) NOT NULL"),
    ("color", "character varying(6) NOT NULL"),
    ("description", "character varying(200) NOT NULL"),
])

table("extras_taggeditem", [
    ("id", "bigint NOT NULL"),
    ("object_id", "bigint NOT NULL"),
    ("content_type_id", "integer NOT NULL"),
    ("tag_id", "bigint NOT NULL"),
], checks=[("extras_taggeditem_object_id_check", "((object_id >= 0))")])

table("extras_imageattachment", [
    ("id", "bigint NOT NULL"), *stamps(),
    ("object_id", "bigint NOT NULL"),
    ("image", "character varying(100) NOT NULL"),
    ("image_height", "smallint NOT NULL"),
    ("image_width", "smallint NOT NULL"),
    ("name", "character varying(50) NOT NULL"),
    ("content_type_id", "integer NOT NULL"),
], checks=[("extras_imageattachment_image_height_check", "((image_height >= 0))"),
           ("extras_imageattachment_image_width_check", "((image_width >= 0))"),
           ("extras_imageattachment_object_id_check", "((object_id >= 0))")],
    comment="Uploaded pictures attached to any object.",
    colcomments={"image": "File path relative to MEDIA_ROOT."})

table("extras_webhook", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(150) NOT NULL"),
    ("payload_url", "character varying(500) NOT NULL"),
    ("http_method", "character varying(30) NOT NULL"),
    ("http_content_type", "character varying(100) NOT NULL"),
    ("additional_headers", "text NOT NULL"),
    ("body_template", "text NOT NULL"),
    ("secret", "character varying(255) NOT NULL"),
    ("ssl_verification", "boolean NOT NULL"),
    ("ca_file_path", "character varying(4096)"),
    ("description", "character varying(200) NOT NULL"),
], colcomments={"secret": "HMAC key used to sign payloads (X-Hook-Signature)."})

table("core_datasource", [
    ("id", "bigint NOT NULL"), *stamps(), CFD,
    ("name", "character varying(100) NOT NULL"),
    ("type", "character varying(50) NOT NULL"),
    ("source_url", "character varying(200) NOT NULL"),
    ("status", "character varying(50) NOT NULL"),
    ("enabled", "boolean NOT NULL"),
    ("ignore_rules", "text NOT NULL"),
    ("parameters", "jsonb"),
    ("last_synced", "timestamp with time zone"),
    ("description", "character varying(200) NOT NULL"),
    ("comments", "text NOT NULL"),
], comment="Remote sources synchronised into NetPoint (git, S3, local paths).",
    colcomments={"parameters": "Backend options, including credentials."})

table("extras_objectchange", [
    ("id", "bigint NOT NULL"),
    ("time", "timestamp with time zone NOT NULL"),
    ("user_name", "character varying(150) NOT NULL"),
    ("request_id", "uuid NOT NULL"),
    ("action", "character varying(50) NOT NULL"),
    ("changed_object_id", "bigint NOT NULL"),
    ("related_object_id", "bigint"),
    ("object_repr", "character varying(200) NOT NULL"),
    ("prechange_data", "jsonb"),
    ("postchange_data", "jsonb"),
    ("changed_object_type_id", "integer NOT NULL"),
    ("related_object_type_id", "integer"),
    ("user_id", "bigint"),
], checks=[("extras_objectchange_changed_object_id_check", "((changed_object_id >= 0))"),
           ("extras_objectchange_related_object_id_check", "((related_object_id >= 0))"),
           ("extras_objectchange_action_check",
            "(((action)::text = ANY (ARRAY[('create'::character varying)::text, ('update'::character varying)::text, ('delete'::character varying)::text])))")],
    comment="Change log: one row per create, update or delete, with before and after snapshots.",
    colcomments={"user_name": "Kept when the user account is deleted (user_id becomes NULL).",
                 "prechange_data": "Serialized object before the change; NULL for creates.",
                 "postchange_data": "Serialized object after the change; NULL for deletes."})


# constraints, indexes, foreign keys -------------------------------------------

PRIMARY = {t: ("session_key" if t == "django_session" else "id") for t in ORDER}
UNIQUES = []     # (table, constraint name, [cols])
INDEXES = []     # (index name, sql)
FKS = []         # (table, constraint name, col, reftable)


def unique(t, *cols):
    if len(cols) == 1:
        name = "%s_%s_key" % (t, cols[0])
    else:
        name = "%s_%s_%s_uniq" % (t, "_".join(cols), h8(t, *cols))
    UNIQUES.append((t, trim(name), list(cols)))


def trim(name):
    """Keep identifiers within PostgreSQL's 63 bytes, staying unique."""
    if len(name) <= 63:
        return name
    return name[:54].rstrip("_") + "_" + h8(name)


def index(t, cols, *, using="btree", like=False, unique_=False, where=None, name=None, exprs=None):
    body = exprs or ", ".join(ident(c) for c in cols)
    if like:
        body = "%s varchar_pattern_ops" % cols[0]
    if name is None:
        name = "%s_%s_%s%s" % (t, "_".join(cols), h8(t, *cols, like), "_like" if like else "")
    sql = "CREATE %sINDEX %s ON public.%s USING %s (%s)%s;" % (
        "UNIQUE " if unique_ else "", trim(name), t, using, body,
        " WHERE (%s)" % where if where else "")
    INDEXES.append((trim(name), sql))


def fk(t, col, ref):
    name = "%s_%s_%s_fk_%s_id" % (t, col, h8(t, col, ref), ref)
    FKS.append((t, trim(name), col, ref))
    if not any(t == ut and ucols == [col] for ut, _, ucols in UNIQUES):
        index(t, [col])


def slug_name(t, name_like=True):
    unique(t, "name")
    unique(t, "slug")
    index(t, ["slug"], like=True)
    if name_like:
        index(t, ["name"], like=True)


unique("django_content_type", "app_label", "model")
unique("auth_group", "name"); index("auth_group", ["name"], like=True)
unique("auth_permission", "content_type_id", "codename")
fk("auth_permission", "content_type_id", "django_content_type")
index("django_session", ["expire_date"])
index("django_session", ["session_key"], like=True)
unique("users_user", "username"); index("users_user", ["username"], like=True)
unique("users_user_groups", "user_id", "group_id")
fk("users_user_groups", "user_id", "users_user")
fk("users_user_groups", "group_id", "auth_group")
unique("users_token", "key"); index("users_token", ["key"], like=True)
fk("users_token", "user_id", "users_user")
slug_name("tenancy_tenantgroup")
slug_name("tenancy_tenant", name_like=False)
fk("tenancy_tenant", "group_id", "tenancy_tenantgroup")
unique("dcim_region", "parent_id", "name")
unique("dcim_region", "parent_id", "slug")
index("dcim_region", None, unique_=True, name="dcim_region_name", exprs="name", where="parent_id IS NULL")
index("dcim_region", None, unique_=True, name="dcim_region_slug", exprs="slug", where="parent_id IS NULL")
index("dcim_region", ["slug"], like=True)
index("dcim_region", ["tree_id"])
fk("dcim_region", "parent_id", "dcim_region")
slug_name("dcim_site", name_like=False)
fk("dcim_site", "region_id", "dcim_region")
fk("dcim_site", "tenant_id", "tenancy_tenant")
unique("dcim_location", "site_id", "parent_id", "name")
unique("dcim_location", "site_id", "parent_id", "slug")
index("dcim_location", None, unique_=True, name="dcim_location_name", exprs="site_id, name", where="parent_id IS NULL")
index("dcim_location", None, unique_=True, name="dcim_location_slug", exprs="site_id, slug", where="parent_id IS NULL")
index("dcim_location", ["tree_id"])
fk("dcim_location", "site_id", "dcim_site")
fk("dcim_location", "parent_id", "dcim_location")
fk("dcim_location", "tenant_id", "tenancy_tenant")
unique("dcim_rack", "asset_tag")
unique("dcim_rack", "location_id", "name")
index("dcim_rack", None, unique_=True, name="dcim_rack_unique_site_name_no_location",
      exprs="site_id, name", where="location_id IS NULL")
fk("dcim_rack", "site_id", "dcim_site")
fk("dcim_rack", "location_id", "dcim_location")
fk("dcim_rack", "tenant_id", "tenancy_tenant")
slug_name("dcim_manufacturer")
slug_name("dcim_platform")
fk("dcim_platform", "manufacturer_id", "dcim_manufacturer")
slug_name("dcim_devicerole")
unique("dcim_devicetype", "manufacturer_id", "model")
unique("dcim_devicetype", "manufacturer_id", "slug")
index("dcim_devicetype", ["slug"], like=True)
fk("dcim_devicetype", "manufacturer_id", "dcim_manufacturer")
unique("dcim_device", "asset_tag")
unique("dcim_device", "primary_ip4_id")
unique("dcim_device", "primary_ip6_id")
index("dcim_device", None, unique_=True, name="dcim_device_unique_name_site_tenant",
      exprs="lower((name)::text), site_id, tenant_id", where="tenant_id IS NOT NULL")
index("dcim_device", None, unique_=True, name="dcim_device_unique_name_site",
      exprs="lower((name)::text), site_id", where="tenant_id IS NULL")
index("dcim_device", ["name"])
for c, r in [("device_type_id", "dcim_devicetype"), ("role_id", "dcim_devicerole"),
             ("platform_id", "dcim_platform"), ("site_id", "dcim_site"),
             ("location_id", "dcim_location"), ("rack_id", "dcim_rack"),
             ("tenant_id", "tenancy_tenant"), ("primary_ip4_id", "ipam_ipaddress"),
             ("primary_ip6_id", "ipam_ipaddress")]:
    fk("dcim_device", c, r)
unique("dcim_interface", "device_id", "name")
for c, r in [("device_id", "dcim_device"), ("lag_id", "dcim_interface"),
             ("parent_id", "dcim_interface"), ("untagged_vlan_id", "ipam_vlan"),
             ("vrf_id", "ipam_vrf"), ("cable_id", "dcim_cable")]:
    fk("dcim_interface", c, r)
unique("dcim_cable", "a_interface_id")
unique("dcim_cable", "b_interface_id")
fk("dcim_cable", "tenant_id", "tenancy_tenant")
fk("dcim_cable", "a_interface_id", "dcim_interface")
fk("dcim_cable", "b_interface_id", "dcim_interface")
unique("ipam_vrf", "rd")
index("ipam_vrf", None, unique_=True, name="ipam_vrf_unique_name_no_tenant", exprs="name",
      where="tenant_id IS NULL")
index("ipam_vrf", None, unique_=True, name="ipam_vrf_unique_tenant_name", exprs="tenant_id, name",
      where="tenant_id IS NOT NULL")
fk("ipam_vrf", "tenant_id", "tenancy_tenant")
unique("ipam_vlan", "site_id", "vid")
index("ipam_vlan", None, unique_=True, name="ipam_vlan_unique_vid_global", exprs="vid",
      where="site_id IS NULL")
fk("ipam_vlan", "site_id", "dcim_site")
fk("ipam_vlan", "tenant_id", "tenancy_tenant")
index("ipam_prefix", None, using="gist", name="ipam_prefix_prefix_gist", exprs="prefix inet_ops")
index("ipam_prefix", ["vrf_id", "prefix"])
for c, r in [("site_id", "dcim_site"), ("vlan_id", "ipam_vlan"), ("vrf_id", "ipam_vrf"),
             ("tenant_id", "tenancy_tenant")]:
    fk("ipam_prefix", c, r)
index("ipam_ipaddress", ["address"])
index("ipam_ipaddress", None, name="ipam_ipaddress_host", exprs="host(address)")
index("ipam_ipaddress", ["assigned_object_type_id", "assigned_object_id"])
for c, r in [("assigned_object_type_id", "django_content_type"), ("nat_inside_id", "ipam_ipaddress"),
             ("vrf_id", "ipam_vrf"), ("tenant_id", "tenancy_tenant")]:
    fk("ipam_ipaddress", c, r)
slug_name("extras_tag")
unique("extras_taggeditem", "content_type_id", "object_id", "tag_id")
index("extras_taggeditem", ["content_type_id", "object_id"])
fk("extras_taggeditem", "content_type_id", "django_content_type")
fk("extras_taggeditem", "tag_id", "extras_tag")
index("extras_imageattachment", ["content_type_id", "object_id"])
fk("extras_imageattachment", "content_type_id", "django_content_type")
unique("extras_webhook", "name")
unique("core_datasource", "name")
index("extras_objectchange", ["time"])
index("extras_objectchange", ["request_id"])
index("extras_objectchange", ["changed_object_type_id", "changed_object_id"])
fk("extras_objectchange", "changed_object_type_id", "django_content_type")
fk("extras_objectchange", "related_object_type_id", "django_content_type")
fk("extras_objectchange", "user_id", "users_user")

FUNCTION = """CREATE FUNCTION public.dcim_rack_units_free(p_rack bigint) RETURNS integer
    LANGUAGE sql STABLE
    AS $$
    SELECT (r.u_height - COALESCE(sum(dt.u_height), 0))::integer
      FROM public.dcim_rack r
      LEFT JOIN public.dcim_device d ON d.rack_id = r.id AND d."position" IS NOT NULL
      LEFT JOIN public.dcim_devicetype dt ON dt.id = d.device_type_id
     WHERE r.id = p_rack
     GROUP BY r.u_height
$$;"""

VIEW = """CREATE VIEW public.dcim_device_summary AS
 SELECT d.id,
    d.name,
    d.status,
    s.name AS site,
    l.name AS location,
    r.name AS rack,
    d."position",
    m.name AS manufacturer,
    dt.model AS device_type,
    dr.name AS role,
    t.name AS tenant,
    host(ip4.address) AS primary_ip4,
    host(ip6.address) AS primary_ip6,
    d.interface_count
   FROM (((((((((public.dcim_device d
     JOIN public.dcim_site s ON ((s.id = d.site_id)))
     JOIN public.dcim_devicetype dt ON ((dt.id = d.device_type_id)))
     JOIN public.dcim_manufacturer m ON ((m.id = dt.manufacturer_id)))
     JOIN public.dcim_devicerole dr ON ((dr.id = d.role_id)))
     LEFT JOIN public.dcim_location l ON ((l.id = d.location_id)))
     LEFT JOIN public.dcim_rack r ON ((r.id = d.rack_id)))
     LEFT JOIN public.tenancy_tenant t ON ((t.id = d.tenant_id)))
     LEFT JOIN public.ipam_ipaddress ip4 ON ((ip4.id = d.primary_ip4_id)))
     LEFT JOIN public.ipam_ipaddress ip6 ON ((ip6.id = d.primary_ip6_id)));"""


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def add(t, **row):
    cols = [c for c, _ in TABLES[t]["cols"]]
    unknown = set(row) - set(cols)
    assert not unknown, (t, unknown)
    missing = [c for c in cols if c not in row]
    assert not missing, (t, missing)
    TABLES[t]["rows"].append(row)
    return row


def rows(t):
    return TABLES[t]["rows"]


def by_id(t, i):
    for r in rows(t):
        if r["id"] == i:
            return r
    raise KeyError((t, i))


def std(days, upd=None):
    c = at(days, seconds=rng.randrange(8 * 3600, 18 * 3600))
    u = c if upd is None else at(upd, seconds=rng.randrange(8 * 3600, 18 * 3600))
    return dict(created=c, last_updated=u)


# content types and permissions --------------------------------------------------

CT_LIST = [
    ("contenttypes", "contenttype", "content type"),
    ("auth", "group", "group"),
    ("auth", "permission", "permission"),
    ("sessions", "session", "session"),
    ("users", "user", "user"),
    ("users", "token", "token"),
    ("tenancy", "tenantgroup", "tenant group"),
    ("tenancy", "tenant", "tenant"),
    ("dcim", "region", "region"),
    ("dcim", "site", "site"),
    ("dcim", "location", "location"),
    ("dcim", "rack", "rack"),
    ("dcim", "manufacturer", "manufacturer"),
    ("dcim", "platform", "platform"),
    ("dcim", "devicerole", "device role"),
    ("dcim", "devicetype", "device type"),
    ("dcim", "device", "device"),
    ("dcim", "interface", "interface"),
    ("dcim", "cable", "cable"),
    ("ipam", "vrf", "VRF"),
    ("ipam", "vlan", "VLAN"),
    ("ipam", "prefix", "prefix"),
    ("ipam", "ipaddress", "IP address"),
    ("extras", "tag", "tag"),
    ("extras", "taggeditem", "tagged item"),
    ("extras", "imageattachment", "image attachment"),
    ("extras", "webhook", "webhook"),
    ("extras", "objectchange", "object change"),
    ("core", "datasource", "data source"),
]
CT = {}
for i, (app, model, verbose) in enumerate(CT_LIST, 1):
    add("django_content_type", id=i, app_label=app, model=model)
    CT[model] = i
pid = 0
for i, (app, model, verbose) in enumerate(CT_LIST, 1):
    for act in ("add", "change", "delete", "view"):
        pid += 1
        add("auth_permission", id=pid, name="Can %s %s" % (act, verbose), content_type_id=i,
            codename="%s_%s" % (act, model))

MIGRATIONS = [
    ("contenttypes", "0001_initial"), ("contenttypes", "0002_remove_content_type_name"),
    ("auth", "0001_initial"), ("auth", "0002_alter_permission_name_max_length"),
    ("auth", "0003_alter_user_email_max_length"), ("auth", "0004_alter_user_username_opts"),
    ("auth", "0005_alter_user_last_login_null"), ("auth", "0006_require_contenttypes_0002"),
    ("auth", "0007_alter_validators_add_error_messages"), ("auth", "0008_alter_user_username_max_length"),
    ("auth", "0009_alter_user_last_name_max_length"), ("auth", "0010_alter_group_name_max_length"),
    ("auth", "0011_update_proxy_permissions"), ("auth", "0012_alter_user_first_name_max_length"),
    ("users", "0001_initial"), ("users", "0002_token_allowed_ips"), ("users", "0003_token_last_used"),
    ("tenancy", "0001_initial"), ("tenancy", "0002_tenantgroup"),
    ("dcim", "0001_initial"), ("dcim", "0002_natural_sort_collation"), ("dcim", "0003_region_mptt"),
    ("dcim", "0004_location"), ("dcim", "0005_devicetype_images"), ("dcim", "0006_cable_endpoints"),
    ("dcim", "0007_device_unique_name_constraints"), ("dcim", "0008_interface_counts"),
    ("ipam", "0001_initial"), ("ipam", "0002_vrf_unique_constraints"), ("ipam", "0003_prefix_depth_children"),
    ("extras", "0001_initial"), ("extras", "0002_imageattachment"), ("extras", "0003_webhook_headers"),
    ("extras", "0004_objectchange_jsonb"), ("core", "0001_datasource"), ("sessions", "0001_initial"),
]
for i, (app, name) in enumerate(MIGRATIONS, 1):
    day = 0 if i <= 31 else 210
    add("django_migrations", id=i, app=app, name=name, applied=at(day, 3600 * 7 + i * 2, 200000 + i * 1117))

# users -----------------------------------------------------------------------


def pbkdf2(password, salt):
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 600000)
    return "pbkdf2_sha256$600000$%s$%s" % (salt, base64.b64encode(dk).decode())


SALT_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def salt():
    return "".join(rng.choice(SALT_CHARS) for _ in range(22))


for g, name in enumerate(["Network Engineers", "NOC Read-Only", "Provisioning"], 1):
    add("auth_group", id=g, name=name)

USERS = [
    # id, username, first, last, superuser, staff, active, joined day, last login day
    (1, "admin", "", "", True, True, True, 0, 676),
    (2, "mkowalski", "Marta", "Kowalski", False, True, True, 2, 683),
    (3, "jdiallo", "Jean", "Diallo", False, False, True, 2, 681),
    (4, "noc-viewer", "NOC", "Shared Screen", False, False, True, 9, 684),
    (5, "svc-provisioning", "", "", False, False, True, 11, None),
    (6, "rsantos", "Rui", "Santos", False, False, False, 40, 402),
    (7, "aokafor", "Amara", "Okafor", False, False, True, 388, 677),
]
for uid, uname, first, last, su, staff, active, joined, login in USERS:
    if uname == "svc-provisioning":
        pw = "!" + "".join(rng.choice(SALT_CHARS) for _ in range(40))
    else:
        pw = pbkdf2("fixture-%s-pw" % uname, salt())
    email = "" if uname.startswith("svc-") else (
        "%s@netpoint.example" % (uname if not first else "%s.%s" % (first.lower(), last.lower().replace(" ", "-"))))
    add("users_user", id=uid, password=pw,
        last_login=at(login, 3600 * 9 + uid * 611) if login else None,
        is_superuser=su, username=uname, first_name=first, last_name=last, email=email,
        is_staff=staff, is_active=active, date_joined=at(joined, 3600 * 8 + uid * 97))
for i, (u, g) in enumerate([(2, 1), (3, 1), (6, 1), (7, 1), (4, 2), (7, 2), (5, 3)], 1):
    add("users_user_groups", id=i, user_id=u, group_id=g)

TOKENS = [
    (1, 1, True, "admin CLI", None, 20, None, 676),
    (2, 5, True, "Ansible provisioning runs", "{10.10.0.0/24,192.0.2.10/32}", 12, None, 684),
    (3, 4, False, "Grafana dashboards", "{10.10.4.0/24}", 15, None, 684),
    (4, 2, True, "laptop, rotated quarterly", None, 300, 536, 530),
    (5, 3, True, "terraform state runner", "{10.10.0.0/24,2001:db8:10:a::/64}", 410, 771, 683),
    (6, 7, False, "notebook exploration", None, 390, None, None),
    (7, 6, True, "old automation (owner left)", None, 60, None, 398),
]
for tid, uid, write, desc, ips, cday, exp, used in TOKENS:
    add("users_token", id=tid, created=at(cday, 3600 * 10 + tid * 37), expires=at(exp, 0, 0) if exp else None,
        last_used=at(used, 3600 * 14 + tid * 131) if used else None,
        key=hashlib.sha1(("netpoint-token-%d" % tid).encode()).hexdigest(), write_enabled=write,
        description=desc, allowed_ips=Raw(ips) if ips else None, user_id=uid)

# sessions
for i, (uid, exp) in enumerate([(1, 690), (2, 697), (3, 695), (4, 698), (7, 691), (2, 520), (3, 600), (None, 699)]):
    payload = {"_auth_user_id": str(uid), "_auth_user_backend": "netpoint.authentication.ObjectPermissionBackend",
               "_auth_user_hash": hashlib.sha256(("hash%d%d" % (i, uid or 0)).encode()).hexdigest()} if uid else {
        "netpoint_prefs": {"pagination": {"per_page": 100}, "ui": {"colormode": "dark"}}}
    data = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
    stamp = base64.b32encode(hashlib.md5(str(i).encode()).digest()[:4]).decode().rstrip("=").lower()
    sig = base64.urlsafe_b64encode(hashlib.sha256(("sig%d" % i).encode()).digest()).decode().rstrip("=")
    key = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32))
    add("django_session", session_key=key, session_data="%s:%s:%s" % (data, stamp, sig),
        expire_date=at(exp, 3600 * 9 + i * 1013))

# tenancy ---------------------------------------------------------------------

add("tenancy_tenantgroup", id=1, **std(3), custom_field_data={}, name="Internal", slug="internal",
    description="Our own departments")
add("tenancy_tenantgroup", id=2, **std(3), custom_field_data={}, name="Customers", slug="customers",
    description="Colocation and managed-service customers")
TENANTS = [
    (1, "NetPoint Operations", 1, "Network operations team", {"cost_center": "OPS-100", "billing_id": None}),
    (2, "Corporate IT", 1, "Office networks and end-user services", {"cost_center": "IT-210", "billing_id": None}),
    (3, "Northwind Logistics", 2, "Cage A-12, Frankfurt", {"cost_center": None, "billing_id": "C-10231"}),
    (4, "Blue Heron Labs", 2, "Cage B-03, Frankfurt", {"cost_center": None, "billing_id": "C-10245"}),
    (5, "Castellan Media", 2, "", {"cost_center": None, "billing_id": "C-10302"}),
    (6, "Fjordline Energy AS", 2, "Toronto expansion customer", {"cost_center": None, "billing_id": "C-10377"}),
]
for tid, name, g, desc, cf in TENANTS:
    add("tenancy_tenant", id=tid, **std(4 + tid * 3), custom_field_data=cf, name=name, slug=slugify(name),
        description=desc, comments="", group_id=g)

# regions (nested sets) --------------------------------------------------------

REGIONS = [(1, "Europe", None), (2, "Western Europe", 1), (3, "Northern Europe", 1), (4, "Germany", 2),
           (5, "Netherlands", 2), (6, "Portugal", 2), (7, "Norway", 3), (8, "North America", None),
           (9, "Canada", 8)]


def nested(items, site=None):
    """items: [(id, parent)] -> {id: (lft, rght, tree, level)}"""
    kids = {}
    for i, p in items:
        kids.setdefault(p, []).append(i)
    out = {}
    tree = 0
    for root in kids.get(None, []):
        tree += 1
        counter = [0]

        def walk(n, level):
            counter[0] += 1
            lft = counter[0]
            for k in kids.get(n, []):
                walk(k, level + 1)
            counter[0] += 1
            out[n] = (lft, counter[0], tree, level)
        walk(root, 0)
    return out


ns = nested([(i, p) for i, _, p in REGIONS])
for i, name, parent in REGIONS:
    lft, rght, tree, level = ns[i]
    add("dcim_region", id=i, **std(5), custom_field_data={}, name=name, slug=slugify(name), description="",
        parent_id=parent, lft=lft, rght=rght, tree_id=tree, level=level)

SITES = [
    (1, "Frankfurt DC1", "fra-dc1", "active", "FR-Hall 5", "Europe/Berlin", 4, 1,
     "Hanauer Landstraße 310, 60314 Frankfurt am Main, Germany", "50.118470", "8.724310",
     {"noc_phone": "+49 69 5550 1200", "power_feeds": 2}),
    (2, "Amsterdam DC2", "ams-dc2", "active", "AMS-SP2", "Europe/Amsterdam", 5, 1,
     "Kruislaan 409, 1098 SJ Amsterdam, Netherlands", "52.356020", "4.955190",
     {"noc_phone": "+31 20 555 0190", "power_feeds": 2}),
    (3, "Amsterdam DC10", "ams-dc10", "active", "AMS-ZO10", "Europe/Amsterdam", 5, 1,
     "Johan Huizingalaan 763, 1066 VH Amsterdam, Netherlands", "52.345810", "4.829060",
     {"noc_phone": "+31 20 555 0110", "power_feeds": 1}),
    (4, "Lisboa São Bento POP", "lis-pop1", "active", "", "Europe/Lisbon", 6, 1,
     "Rua de São Bento 112, 1200-820 Lisboa, Portugal", "38.712870", "-9.153320",
     {"noc_phone": None, "power_feeds": 1}),
    (5, "Oslo Økern Office", "osl-okern", "active", "", "Europe/Oslo", 7, 2,
     "Økernveien 94, 0579 Oslo, Norway", "59.928600", "10.807100",
     {"noc_phone": "+47 22 55 50 40", "power_feeds": 1}),
    (6, "Toronto POP1", "tor-pop1", "active", "TOR-151F", "America/Toronto", 9, 6,
     "151 Front St W, Toronto, ON M5J 2N1, Canada", "43.644520", "-79.385600",
     {"noc_phone": "+1 416 555 0147", "power_feeds": 2}),
    (7, "Berlin Lab", "ber-lab", "decommissioning", "", "Europe/Berlin", 4, 1,
     "Lohmühlenstraße 65, 12435 Berlin, Germany", None, None, {}),
]
for sid, name, slug, status, fac, tz, region, tenant, addr, lat, lon, cf in SITES:
    comments = ""
    if sid == 1:
        comments = ("Access: badge + PIN at the loading dock.\nRemote hands ticket via portal;\t"
                    "escalate to the NOC after 30 min.")
    if sid == 5:
        comments = "Floor plans on the share: \\\\fs-osl-01\\netdocs\\okern\\floor3.pdf"
    add("dcim_site", id=sid, **std(6 + sid, 20 + sid * 31), custom_field_data=cf, name=name, slug=slug,
        status=status, facility=fac, time_zone=tz, description="", physical_address=addr,
        shipping_address=addr if sid in (1, 6) else "", latitude=lat, longitude=lon, comments=comments,
        region_id=region, tenant_id=tenant)

LOCATIONS = [
    (1, 1, "Hall A", None, None), (2, 1, "Cage A-12", 1, 3), (3, 1, "Hall B", None, None),
    (4, 1, "Cage B-03", 3, 4), (5, 2, "Suite 2.14", None, None), (6, 3, "Room 0.01", None, None),
    (7, 3, "Room 0.02", None, None), (8, 4, "Telecom Room", None, None), (9, 5, "Floor 3", None, 2),
    (10, 5, "Comms Closet 3.1", 9, 2), (11, 6, "Meet-Me Room", None, None), (12, 7, "Lab Bench", None, None),
]
loc_ns = nested([(i, p) for i, _, _, p, _ in LOCATIONS])   # one tree per top-level location
for i, s, name, parent, tenant in LOCATIONS:
    lft, rght, tree, level = loc_ns[i]
    add("dcim_location", id=i, **std(8 + i), custom_field_data={}, name=name, slug=slugify(name),
        status="active", description="", site_id=s, parent_id=parent, tenant_id=tenant,
        lft=lft, rght=rght, tree_id=tree, level=level)

RACKS = [
    # id, name, site, location, tenant, u_height, status
    (1, "A12-R1", 1, 2, 3, 42, "active"), (2, "A12-R2", 1, 2, 3, 42, "active"),
    (3, "A12-R10", 1, 2, 3, 42, "active"), (4, "B03-R1", 1, 4, 4, 24, "active"),
    (5, "B03-R2", 1, 4, 4, 24, "reserved"), (6, "AMS2-01", 2, 5, None, 47, "active"),
    (7, "AMS2-02", 2, 5, None, 47, "active"), (8, "R1", 3, 6, None, 42, "active"),
    (9, "R2", 3, 7, None, 42, "active"), (10, "Rack 1", 4, 8, None, 24, "active"),
    (11, "Comms 1", 5, 10, 2, 18, "active"), (12, "TOR-R1", 6, 11, None, 42, "active"),
    (13, "Spare frame", 7, None, None, 42, "deprecated"),
]
for rid, name, site, loc, tenant, uh, status in RACKS:
    add("dcim_rack", id=rid, **std(12 + rid * 2, 100 + rid * 17), custom_field_data={}, name=name,
        facility_id=("%s.%02d" % (name[:3].upper(), rid)) if site in (1, 6) else None, status=status,
        serial="RK%06d" % (310000 + rid * 37) if rid != 13 else "",
        asset_tag="NP-RACK-%04d" % rid if rid != 13 else None, width=19, u_height=uh, starting_unit=1,
        desc_units=False, outer_depth=1200 if uh >= 42 else 800,
        comments="Replaced in 2024 refresh." if rid == 4 else "", description="", site_id=site,
        location_id=loc, tenant_id=tenant)

MFRS = [(1, "Northgate Networks"), (2, "Kestrel Systems"), (3, "Vantage Power"), (4, "Halden Optics"),
        (5, "Generic")]
for mid, name in MFRS:
    add("dcim_manufacturer", id=mid, **std(14), custom_field_data={}, name=name, slug=slugify(name),
        description="")
for pid_, name, mfr, desc in [(1, "NorthOS 12", 1, "Switch OS, long-term branch"), (2, "NorthOS 14", 1, ""),
                             (3, "KestrelOS 7", 2, "Router and firewall OS"), (4, "Debian 12", None, "")]:
    add("dcim_platform", id=pid_, **std(15), custom_field_data={}, name=name, slug=slugify(name),
        description=desc, manufacturer_id=mfr)
ROLES = [(1, "Core Router", "aa1409"), (2, "Distribution Switch", "2196f3"), (3, "Access Switch", "4caf50"),
         (4, "Firewall", "e91e63"), (5, "Console Server", "9e9e9e"), (6, "PDU", "ffc107"),
         (7, "Server", "607d8b"), (8, "Patch Panel", "795548")]
for rid, name, color in ROLES:
    add("dcim_devicerole", id=rid, **std(15), custom_field_data={}, name=name, slug=slugify(name), color=color,
        vm_role=rid == 7, description="")

DTYPES = [
    # id, mfr, model, part, u, full_depth, airflow, weight, front, rear
    (1, 1, "NS-4850", "NS-4850-48T-AC", "1.0", True, "front-to-rear", "6.80",
     "devicetype-images/northgate-ns-4850.front.png", "devicetype-images/northgate-ns-4850.rear.png"),
    (2, 1, "NS-9300", "NS-9300-32Q", "2.0", True, "front-to-rear", "14.20", "", ""),
    (3, 2, "KR-2200", "KR2200-BASE", "2.0", True, "side-to-rear", "17.50",
     "devicetype-images/kestrel-kr-2200.front.png", ""),
    (4, 2, "KR-1000", "KR1000-AC", "1.0", False, "side-to-rear", "5.10",
     "devicetype-images/legacy/kestrel-kr-1000.front.png", ""),
    (5, 3, "VP-24A", "VP24A-16A-IEC", "0.0", False, "passive", "3.40", "", ""),
    (6, 4, "HC-48", "HC48-DUAL", "1.0", False, "front-to-rear", None, "", ""),
    (7, 5, "1U Server", "", "1.0", True, "front-to-rear", None, "", ""),
    (8, 5, "24-port Patch Panel", "", "1.0", False, "passive", "1.20", "", ""),
    (9, 2, "KF-600", "KF600-UTM", "1.0", False, "front-to-rear", "4.30", "", ""),
]
for did, mfr, model, part, u, full, air, w, front, rear in DTYPES:
    add("dcim_devicetype", id=did, **std(16 + did), custom_field_data={}, model=model,
        slug=slugify("%s %s" % (MFRS[mfr - 1][1].split()[0], model)), part_number=part, u_height=u,
        is_full_depth=full, airflow=air, weight=w, weight_unit="kg" if w else "", front_image=front,
        rear_image=rear, comments="End of sale 2025-06-30." if did == 4 else "", description="",
        manufacturer_id=mfr)

# devices -------------------------------------------------------------------------
DEVICES = [
    # id, name, dtype, role, site, rack, position, tenant, status
    (1, "fra1-core-01", 3, 1, 1, 1, 40, 1, "active"),
    (2, "fra1-core-02", 3, 1, 1, 2, 40, 1, "active"),
    (3, "fra1-dist-01", 2, 2, 1, 1, 36, 1, "active"),
    (4, "fra1-dist-02", 2, 2, 1, 2, 36, 1, "active"),
    (5, "fra1-acc-01", 1, 3, 1, 1, 30, 1, "active"),
    (6, "fra1-acc-02", 1, 3, 1, 2, 30, 1, "active"),
    (7, "fra1-acc-10", 1, 3, 1, 3, 30, 1, "active"),
    (8, "fra1-con-01", 6, 5, 1, 3, 42, 1, "active"),
    (9, "fra1-fw-01", 9, 4, 1, 1, 34, 3, "active"),
    (10, "fra1-pdu-a1", 5, 6, 1, 1, None, 1, "active"),
    (11, "fra1-bhl-srv-01", 7, 7, 1, 4, 10, 4, "active"),
    (12, "fra1-bhl-srv-02", 7, 7, 1, 4, 12, 4, "active"),
    (13, "fra1-bhl-acc-01", 1, 3, 1, 4, 22, 4, "active"),
    (14, "fra1-pp-a12-01", 8, 8, 1, 1, 42, 1, "active"),
    (15, "fra1-pp-b03-01", 8, 8, 1, 4, 24, 4, "active"),
    (16, "ams2-core-01", 3, 1, 2, 6, 40, 1, "active"),
    (17, "ams2-acc-01", 1, 3, 2, 6, 38, 1, "active"),
    (18, "ams2-acc-02", 1, 3, 2, 7, 38, 1, "active"),
    (19, "ams2-fw-01", 9, 4, 2, 6, 36, 1, "active"),
    (20, "ams2-con-01", 6, 5, 2, 7, 42, 1, "active"),
    (21, "ams2-srv-cm-01", 7, 7, 2, 7, 20, 5, "active"),
    (22, "ams10-core-01", 4, 1, 3, 8, 20, 1, "active"),
    (23, "ams10-acc-01", 1, 3, 3, 8, 18, 1, "active"),
    (24, "ams10-acc-02", 1, 3, 3, 9, 18, 1, "active"),
    (25, "ams10-srv-01", 7, 7, 3, 9, 10, None, "offline"),
    (26, "lis1-rtr-01", 4, 1, 4, 10, 20, 1, "active"),
    (27, "lis1-acc-01", 1, 3, 4, 10, 18, 1, "active"),
    (28, "lis1-fw-01", 9, 4, 4, 10, 16, 1, "active"),
    (29, "osl-ofc-rtr-01", 4, 1, 5, 11, 16, 2, "active"),
    (30, "osl-ofc-acc-01", 1, 3, 5, 11, 14, 2, "active"),
    (31, "osl-ofc-acc-02", 1, 3, 5, 11, 13, 2, "active"),
    (32, "tor1-core-01", 3, 1, 6, 12, 40, 1, "active"),
    (33, "tor1-acc-01", 1, 3, 6, 12, 38, 1, "active"),
    (34, "tor1-fw-01", 9, 4, 6, 12, 30, 6, "active"),
    (35, "tor1-fje-srv-01", 7, 7, 6, 12, 20, 6, "active"),
    (36, "tor1-pdu-a", 5, 6, 6, 12, None, 1, "active"),
    (37, "ber-lab-rtr-01", 3, 1, 7, None, None, None, "planned"),
    (38, "ber-lab-sw-01", 1, 3, 7, None, None, None, "staged"),
    (39, None, 7, 7, 7, None, None, None, "inventory"),
    (40, "ber-lab-fw-01", 9, 4, 7, None, None, None, "failed"),
]
DELETED_DEVICES = [(41, "fra1-acc-03", 1, 3, 1, 3, 28), (42, "ams10-core-00", 4, 1, 3, 8, 22),
                   (43, "lis1-sw-old", 1, 3, 4, 10, 14)]
PLATFORM = {1: 2, 2: 2, 3: 3, 4: 3, 9: 3, 7: 4}
SITE_PREFIX = {1: "fra1", 2: "ams2", 3: "ams10", 4: "lis1", 5: "osl", 6: "tor1", 7: "ber"}
RACK_LOC = {r[0]: r[3] for r in RACKS}

for did, name, dtype, role, site, rack, pos, tenant, status in DEVICES:
    lcd = None
    if role == 1 and site in (1, 2, 6):
        lcd = {"ntp_servers": ["10.%d.0.5" % (10 * site if site < 6 else 50), "10.10.0.6"],
               "syslog": {"host": "10.10.0.250", "port": 514, "facility": "local6"},
               "bgp": {"asn": 65010, "router_id": "10.255.0.%d" % did}}
    if did == 39:
        lcd = {"note": "awaiting asset tag"}
    cf = {"warranty_end": "2027-%02d-28" % (1 + did % 12), "support_contract": "SC-%05d" % (40000 + did * 7)}
    if dtype in (7, 8):
        cf = {"warranty_end": None, "support_contract": None}
    comments = ""
    if did == 9:
        comments = "PCI scope.\nChange window: Sun 02:00-04:00 CET.\n\nContact: secops@northwind.example"
    if did == 22:
        comments = "Legacy KR-1000 — replacement planned with KR-2200 (see CHG-2291)."
    add("dcim_device", id=did, **std(30 + did * 6, 120 + did * 13), custom_field_data=cf,
        local_context_data=lcd, name=name,
        serial="" if dtype == 8 else "%s%08d" % ("NG" if DTYPES[dtype - 1][1] == 1 else "KS" if DTYPES[dtype - 1][1] == 2 else "SN", 21000000 + did * 7919),
        asset_tag=("NP-%05d" % (10000 + did)) if dtype != 8 and did != 39 else None,
        position="%d.0" % pos if pos else None, face="front" if pos else "",
        status=status, airflow=DTYPES[dtype - 1][6] if dtype not in (5, 8) else "",
        description="unnamed spare from lab cleanup" if did == 39 else "",
        comments=comments, device_type_id=dtype, role_id=role, platform_id=PLATFORM.get(dtype),
        site_id=site, location_id=RACK_LOC.get(rack) if rack else (12 if site == 7 else None),
        rack_id=rack, tenant_id=tenant, primary_ip4_id=None, primary_ip6_id=None, interface_count=0)

# interfaces ---------------------------------------------------------------------

IFACE_PLAN = {
    3: [("mgmt0", "1000base-t", True), ("et-0/0/0", "100gbase-x-qsfp28", False),
        ("et-0/0/1", "100gbase-x-qsfp28", False), ("et-0/0/2", "100gbase-x-qsfp28", False),
        ("et-0/0/3", "100gbase-x-qsfp28", False), ("ae0", "lag", False)],
    4: [("mgmt0", "1000base-t", True), ("ge-0/0/0", "1000base-t", False), ("ge-0/0/1", "1000base-t", False),
        ("ge-0/0/2", "1000base-t", False), ("ge-0/0/3", "1000base-t", False)],
    2: [("Management1", "1000base-t", True), ("Ethernet1", "100gbase-x-qsfp28", False),
        ("Ethernet2", "100gbase-x-qsfp28", False), ("Ethernet3", "100gbase-x-qsfp28", False),
        ("Ethernet4", "100gbase-x-qsfp28", False), ("Port-Channel1", "lag", False)],
    1: [("Management1", "1000base-t", True), ("Ethernet1", "1000base-t", False),
        ("Ethernet2", "1000base-t", False), ("Ethernet10", "1000base-t", False),
        ("Ethernet49", "10gbase-x-sfpp", False), ("Ethernet50", "10gbase-x-sfpp", False)],
    9: [("mgmt", "1000base-t", True), ("port1", "1000base-t", False), ("port2", "1000base-t", False),
        ("port3", "10gbase-x-sfpp", False), ("port4", "10gbase-x-sfpp", False)],
    6: [("eth0", "1000base-t", True), ("eth1", "1000base-t", False)],
    7: [("ipmi", "1000base-t", True), ("eno1", "10gbase-t", False), ("eno2", "10gbase-t", False),
        ("bond0", "lag", False)],
    5: [("net0", "100base-tx", True)],
}
LAG_MEMBERS = {"ae0": ("et-0/0/2", "et-0/0/3"), "Port-Channel1": ("Ethernet3", "Ethernet4"),
               "bond0": ("eno1", "eno2")}
SPEED = {"1000base-t": 1000000, "100gbase-x-qsfp28": 100000000, "10gbase-x-sfpp": 10000000,
         "10gbase-t": 10000000, "100base-tx": 100000}
IFACE = {}   # (device, name) -> row
iid = 0
for d in rows("dcim_device"):
    plan = IFACE_PLAN.get(d["device_type_id"], [])
    if d["id"] == 39:
        plan = [p for p in plan if p[0] in ("ipmi", "eno1")]
    for name, typ, mgmt in plan:
        iid += 1
        mac = None
        if typ != "lag":
            mac = "%s:%02x:%02x:%02x" % ("02:4e:50" if d["device_type_id"] != 7 else "3c:ec:ef",
                                          d["id"], iid % 256, (iid * 37) % 256)
        r = add("dcim_interface", id=iid, **std(31 + d["id"] * 6, 140 + d["id"] * 13 + iid % 5),
                custom_field_data={}, name=name, label="MGMT" if mgmt and typ != "100base-tx" else "",
                type=typ, enabled=not (d["status"] in ("failed",) and not mgmt), mgmt_only=mgmt,
                mtu=9216 if typ in ("100gbase-x-qsfp28", "lag") and d["role_id"] in (1, 2) else (1500 if mgmt else None),
                mac_address=mac, speed=SPEED.get(typ), duplex="full" if typ in ("1000base-t", "10gbase-t") else None,
                mode="" if mgmt or typ == "lag" else ("tagged" if typ.startswith("10") and "base-x" in typ else "access"),
                description="", mark_connected=False, cable_end="", device_id=d["id"], lag_id=None,
                parent_id=None, untagged_vlan_id=None, vrf_id=None, cable_id=None)
        IFACE[(d["id"], name)] = r
    d["interface_count"] = len(plan)
for (dev, name), r in IFACE.items():
    if name in LAG_MEMBERS:
        for m in LAG_MEMBERS[name]:
            IFACE[(dev, m)]["lag_id"] = r["id"]
            IFACE[(dev, m)]["description"] = "member of %s" % name

# cables --------------------------------------------------------------------------

LINKS = [
    # (dev a, iface a, dev b, iface b, type)
    (1, "et-0/0/0", 2, "et-0/0/0", "smf"), (1, "et-0/0/2", 3, "Ethernet3", "dac-active"),
    (1, "et-0/0/3", 3, "Ethernet4", "dac-active"), (2, "et-0/0/2", 4, "Ethernet3", "dac-active"),
    (2, "et-0/0/3", 4, "Ethernet4", "dac-active"), (3, "Ethernet1", 5, "Ethernet49", "mmf-om4"),
    (4, "Ethernet1", 6, "Ethernet49", "mmf-om4"), (3, "Ethernet2", 7, "Ethernet49", "mmf-om4"),
    (4, "Ethernet2", 7, "Ethernet50", "mmf-om4"), (1, "et-0/0/1", 9, "port3", "mmf-om4"),
    (5, "Ethernet10", 10, "net0", "cat6"), (5, "Management1", 8, "eth1", "cat6"),
    (2, "et-0/0/1", 13, "Ethernet49", "mmf-om4"),
    (11, "eno1", 13, "Ethernet1", "cat6a"), (11, "eno2", 13, "Ethernet2", "cat6a"),
    (12, "eno1", 13, "Ethernet10", "cat6a"),
    (16, "et-0/0/0", 17, "Ethernet49", "mmf-om4"), (16, "et-0/0/1", 18, "Ethernet49", "mmf-om4"),
    (16, "et-0/0/2", 19, "port3", "mmf-om4"), (17, "Ethernet1", 21, "eno1", "cat6a"),
    (18, "Ethernet1", 21, "eno2", "cat6a"), (20, "eth1", 17, "Management1", "cat6"),
    (22, "ge-0/0/0", 23, "Ethernet1", "cat6"), (22, "ge-0/0/1", 24, "Ethernet1", "cat6"),
    (24, "Ethernet2", 25, "eno1", "cat6a"),
    (26, "ge-0/0/0", 27, "Ethernet1", "cat6"), (26, "ge-0/0/1", 28, "port1", "cat6"),
    (29, "ge-0/0/0", 30, "Ethernet1", "cat6"), (29, "ge-0/0/1", 31, "Ethernet1", "cat6"),
    (30, "Ethernet49", 31, "Ethernet49", "dac-passive"),
    (32, "et-0/0/0", 33, "Ethernet49", "mmf-om4"), (32, "et-0/0/1", 34, "port3", "mmf-om4"),
    (33, "Ethernet1", 35, "eno1", "cat6a"), (33, "Ethernet2", 35, "eno2", "cat6a"),
    (33, "Ethernet10", 36, "net0", "cat6"),
    (37, "et-0/0/0", 38, "Ethernet49", "dac-passive"),
]
COLORS = {"smf": "f5d300", "mmf-om4": "a5299e", "cat6": "2196f3", "cat6a": "4caf50", "dac-active": "111111",
          "dac-passive": "111111"}
for cid, (da, ia, db, ib, typ) in enumerate(LINKS, 1):
    a, b = IFACE[(da, ia)], IFACE[(db, ib)]
    assert a["cable_id"] is None and b["cable_id"] is None, (da, ia, db, ib)
    dev_a = by_id("dcim_device", da)
    planned = dev_a["status"] in ("planned", "staged")
    length = None if typ.startswith("dac") and cid % 2 else "%.2f" % (1 + (cid * 7) % 30 + (0.5 if cid % 3 else 0))
    tenant = dev_a["tenant_id"] if dev_a["tenant_id"] not in (None, 1) else None
    add("dcim_cable", id=cid, **std(40 + max(da, db) * 6, 130 + cid * 11), custom_field_data={},
        type=typ, status="planned" if planned else "connected",
        label="%s-%04d" % (SITE_PREFIX[dev_a["site_id"]].upper(), cid), color=COLORS[typ] if cid % 4 else "",
        length=length, length_unit="m" if length else "", description="", comments="", tenant_id=tenant,
        a_interface_id=a["id"], b_interface_id=b["id"])
    a["cable_id"], a["cable_end"] = cid, "A"
    b["cable_id"], b["cable_end"] = cid, "B"
    if not a["description"]:
        a["description"] = "to %s %s" % (by_id("dcim_device", db)["name"], ib)
    if not b["description"]:
        b["description"] = "to %s %s" % (dev_a["name"], ia)

# ipam ----------------------------------------------------------------------------

VRFS = [(1, "global-mgmt", "65010:1", None, True, "Out-of-band management"),
        (2, "cust-northwind", "65010:103", 3, True, ""), (3, "cust-blueheron", "65010:104", 4, True, ""),
        (4, "corp", None, 2, False, "Office networks"), (5, "lab", None, None, False, "Berlin lab, overlaps allowed")]
for vid_, name, rd, tenant, enforce, desc in VRFS:
    add("ipam_vrf", id=vid_, **std(20 + vid_), custom_field_data={}, name=name, rd=rd, enforce_unique=enforce,
        description=desc, comments="", tenant_id=tenant)

VLANS = [
    (1, 10, "mgmt", 1, None), (2, 100, "servers", 1, None), (3, 310, "northwind-prod", 1, 3),
    (4, 311, "northwind-dmz", 1, 3), (5, 410, "blueheron", 1, 4), (6, 10, "mgmt", 2, None),
    (7, 100, "servers", 2, None), (8, 10, "mgmt", 3, None), (9, 10, "mgmt", 4, None),
    (10, 10, "mgmt", 5, 2), (11, 200, "staff", 5, 2), (12, 210, "guests", 5, 2), (13, 10, "mgmt", 6, None),
    (14, 120, "fjordline", 6, 6), (15, 999, "quarantine", None, None), (16, 4094, "blackhole", None, None),
]
for vid_, vid, name, site, tenant in VLANS:
    add("ipam_vlan", id=vid_, **std(22 + vid_), custom_field_data={}, vid=vid, name=name,
        status="active", description="", comments="", site_id=site, tenant_id=tenant)
VLAN = {(v[3], v[2]): v[0] for v in VLANS}
for (dev, name), r in IFACE.items():
    d = by_id("dcim_device", dev)
    if d["role_id"] == 3 and name in ("Ethernet1", "Ethernet2", "Ethernet10"):
        key = (d["site_id"], "servers") if (d["site_id"], "servers") in VLAN else (d["site_id"], "mgmt")
        if d["site_id"] == 5:
            key = (5, "staff")
        if dev == 13:
            key = (1, "blueheron")
        r["untagged_vlan_id"] = VLAN.get(key)
    if d["site_id"] == 7 and d["role_id"] != 7 and not r["mgmt_only"]:
        r["vrf_id"] = 5

PREFIXES = [
    # prefix, status, site, vlan, vrf, tenant, desc, pool
    ("10.0.0.0/8", "container", None, None, None, None, "RFC 1918 aggregate", False),
    ("10.10.0.0/16", "container", 1, None, None, None, "Frankfurt", False),
    ("10.10.0.0/24", "active", 1, 1, 1, 1, "FRA management", False),
    ("10.10.1.0/24", "active", 1, 2, None, 1, "FRA servers", True),
    ("10.10.4.0/24", "active", 1, None, 1, 1, "FRA monitoring", False),
    ("10.10.8.0/22", "active", 1, 3, 2, 3, "Northwind production", False),
    ("10.10.12.0/24", "active", 1, 5, 3, 4, "Blue Heron", False),
    ("10.20.0.0/16", "container", None, None, None, None, "Amsterdam", False),
    ("10.20.0.0/24", "active", 2, 6, 1, 1, "AMS2 management", False),
    ("10.20.1.0/24", "active", 2, 7, None, None, "AMS2 servers", False),
    ("10.20.16.0/24", "active", 3, 8, 1, 1, "AMS10 management", False),
    ("10.30.0.0/24", "active", 4, 9, 1, 1, "Lisboa management", False),
    ("10.40.0.0/16", "container", 5, None, 4, 2, "Oslo office", False),
    ("10.40.0.0/24", "active", 5, 10, 4, 2, "Oslo management", False),
    ("10.40.10.0/23", "active", 5, 11, 4, 2, "Oslo staff", True),
    ("10.40.12.0/24", "reserved", 5, 12, 4, 2, "Oslo guests (captive portal)", True),
    ("10.50.0.0/24", "active", 6, 13, 1, 1, "Toronto management", False),
    ("10.50.20.0/24", "active", 6, 14, None, 6, "Fjordline", False),
    ("172.16.99.0/24", "active", 7, None, 5, None, "Lab", False),
    ("192.0.2.0/24", "active", None, None, None, None, "Transit / jump hosts", False),
    ("198.51.100.0/25", "deprecated", 3, None, None, None, "Old AMS10 public block", False),
    ("203.0.113.0/24", "active", None, None, None, None, "Public services", False),
    ("2001:db8::/32", "container", None, None, None, None, "IPv6 aggregate", False),
    ("2001:db8:10::/48", "container", 1, None, None, None, "Frankfurt v6", False),
    ("2001:db8:10:a::/64", "active", 1, 1, 1, 1, "FRA management v6", False),
    ("2001:db8:20::/48", "container", 2, None, None, None, "Amsterdam v6", False),
    ("2001:db8:50::/48", "reserved", 6, None, None, None, "Toronto v6 (planned)", False),
]
nets = [ipaddress.ip_network(p[0]) for p in PREFIXES]
for i, (p, status, site, vlan, vrf, tenant, desc, pool) in enumerate(PREFIXES, 1):
    n = nets[i - 1]
    same = [(nets[j], PREFIXES[j][4]) for j in range(len(PREFIXES)) if j != i - 1]
    depth = sum(1 for m, v in same if m.version == n.version and v == vrf and n != m and n.subnet_of(m))
    children = sum(1 for m, v in same if m.version == n.version and v == vrf and n != m and m.subnet_of(n))
    add("ipam_prefix", id=i, **std(25 + i, 200 + i * 9), custom_field_data={"dhcp_scope": pool} if pool else {},
        prefix=p, status=status, is_pool=pool, mark_utilized=status == "container" and i == 8,
        description=desc, comments="", _depth=depth, _children=children, site_id=site, vlan_id=vlan,
        vrf_id=vrf, tenant_id=tenant)

MGMT_NET = {1: ("10.10.0", 1), 2: ("10.20.0", 1), 3: ("10.20.16", 1), 4: ("10.30.0", 1), 5: ("10.40.0", 4),
            6: ("10.50.0", 1), 7: ("172.16.99", 5)}
ipid = 0


def add_ip(address, status="active", role="", dns="", desc="", iface=None, nat=None, vrf=None, tenant=None,
           created=None):
    global ipid
    ipid += 1
    extra = std(created) if created is not None else std(60 + ipid * 3, 250 + ipid * 5)
    r = add("ipam_ipaddress", id=ipid, **extra, custom_field_data={}, address=address, status=status,
            role=role, dns_name=dns, description=desc, comments="",
            assigned_object_type_id=CT["interface"] if iface else None,
            assigned_object_id=iface["id"] if iface else None, nat_inside_id=nat, vrf_id=vrf, tenant_id=tenant)
    return r


for d in rows("dcim_device"):
    if d["device_type_id"] == 8:
        continue
    mg = next((r for (dev, _), r in IFACE.items() if dev == d["id"] and r["mgmt_only"]), None)
    if mg is None or d["status"] in ("inventory",):
        continue
    net, vrf = MGMT_NET[d["site_id"]]
    host = 10 + d["id"]
    dns = "%s.mgmt.netpoint.example" % d["name"] if d["name"] else ""
    ip = add_ip("%s.%d/24" % (net, host), dns=dns, iface=mg, vrf=vrf,
                tenant=2 if d["site_id"] == 5 else None, created=31 + d["id"] * 6,
                status="reserved" if d["status"] == "planned" else "active")
    d["primary_ip4_id"] = ip["id"]
for dev in (1, 2, 3, 4):
    mg = IFACE[(dev, "mgmt0" if dev < 3 else "Management1")]
    ip = add_ip("2001:db8:10:a::%x/64" % (0x10 + dev), dns="%s.mgmt.netpoint.example" % by_id("dcim_device", dev)["name"],
                iface=mg, vrf=1, created=200 + dev)
    by_id("dcim_device", dev)["primary_ip6_id"] = ip["id"]

# server addresses, a VIP with NAT, reserved and DHCP ranges, a duplicate in another VRF
web = add_ip("10.10.1.50/24", role="vip", dns="portal.netpoint.example", desc="customer portal VIP")
add_ip("203.0.113.10/24", role="vip", dns="portal.netpoint.example", desc="portal public", nat=web["id"])
add_ip("10.10.12.11/24", iface=IFACE[(11, "bond0")], dns="gpu01.blueheron.example", vrf=3, tenant=4)
add_ip("10.10.12.12/24", iface=IFACE[(12, "eno1")], dns="gpu02.blueheron.example", vrf=3, tenant=4)
add_ip("10.10.12.1/24", role="anycast", desc="gateway", vrf=3, tenant=4)
add_ip("10.10.8.1/22", role="vrrp", desc="gateway", vrf=2, tenant=3)
add_ip("10.10.8.2/22", iface=IFACE[(9, "port1")], vrf=2, tenant=3)
add_ip("10.20.1.21/24", iface=IFACE[(21, "eno1")], dns="media-ingest.castellan.example", tenant=5)
add_ip("10.50.20.10/24", iface=IFACE[(35, "eno1")], dns="scada-hist.fjordline.example", tenant=6)
add_ip("192.0.2.10/24", dns="jump01.netpoint.example", desc="ansible runner")
add_ip("192.0.2.11/24", status="deprecated", dns="jump02.netpoint.example", desc="old jump host")
add_ip("198.51.100.7/25", status="deprecated", desc="legacy NAT pool")
for k in range(5):
    add_ip("10.40.10.%d/23" % (200 + k), status="dhcp", desc="staff DHCP pool", vrf=4, tenant=2)
add_ip("10.40.10.1/23", role="vrrp", desc="staff gateway", vrf=4, tenant=2)
add_ip("10.10.0.1/24", role="vrrp", desc="management gateway", vrf=1)
add_ip("10.10.0.2/24", status="reserved", desc="reserved for second gateway", vrf=1)
add_ip("10.10.0.250/24", dns="syslog.mgmt.netpoint.example", desc="syslog collector", vrf=1)
add_ip("10.10.12.1/24", role="anycast", desc="test overlap in lab", vrf=5)
add_ip("172.16.99.1/24", role="vrrp", desc="lab gateway", vrf=5)
DELETED_IPS = [ipid + 1, ipid + 2]

# tags -----------------------------------------------------------------------------

TAGS = [(1, "production", "2e7d32"), (2, "staging", "ff9800"), (3, "pci-scope", "d32f2f"),
        (4, "eol-2025", "795548"), (5, "monitoring: snmp", "00bcd4"), (6, "needs-audit", "9c27b0"),
        (7, "customer-managed", "607d8b"), (8, "ipv6-ready", "3f51b5")]
for tid, name, color in TAGS:
    add("extras_tag", id=tid, **std(18), name=name, slug=slugify(name), color=color,
        description="Devices monitored via SNMPv3" if tid == 5 else "")
TAGGED = []
for d in rows("dcim_device"):
    if d["status"] == "active" and d["role_id"] in (1, 2, 4):
        TAGGED.append((CT["device"], d["id"], 1))
    if d["role_id"] in (1, 2, 3, 4) and d["status"] == "active":
        TAGGED.append((CT["device"], d["id"], 5))
    if d["device_type_id"] == 4:
        TAGGED.append((CT["device"], d["id"], 4))
    if d["tenant_id"] in (3, 4, 5, 6):
        TAGGED.append((CT["device"], d["id"], 7))
TAGGED += [(CT["device"], 9, 3), (CT["device"], 34, 3), (CT["prefix"], 6, 3), (CT["site"], 7, 2),
           (CT["site"], 1, 8), (CT["site"], 2, 8), (CT["site"], 4, 6), (CT["rack"], 13, 6),
           (CT["prefix"], 23, 8), (CT["prefix"], 24, 8), (CT["ipaddress"], 1, 1)]
for i, (ct, obj, tag) in enumerate(sorted(set(TAGGED), key=lambda x: (x[0], x[1], x[2])), 1):
    add("extras_taggeditem", id=i, object_id=obj, content_type_id=ct, tag_id=tag)

IMAGES = [
    (1, "rack", 12, "image-attachments/rack_12_front.png", 360, 180, "Front"),
    (2, "rack", 12, "image-attachments/rack_12_rear.jpg", 360, 180, "Rear"),
    (3, "device", 17, "image-attachments/device_17_serial_label.png", 110, 300, "Serial label"),
    (4, "location", 3, "image-attachments/location_3_floorplan.png", 240, 320, "Hall B floor plan"),
    (5, "site", 2, "image-attachments/site_2_entrance photo.jpg", 240, 320, "Entrance"),
    (6, "rack", 4, "image-attachments/archive/2023/rack_4_front_before_refresh.jpg", 216, 160,
     "Front (before refresh)"),
]
for i, model, obj, path, hgt, wid, name in IMAGES:
    add("extras_imageattachment", id=i, **std(150 + i * 40), object_id=obj, image=path, image_height=hgt,
        image_width=wid, name=name, content_type_id=CT[model])

add("extras_webhook", id=1, **std(90, 402), custom_field_data={}, name="Slack #netops changes",
    payload_url="https://hooks.slack.example/services/T04NP0INT/B06CHG9QZ/t8Vn3qLx0FhR2mKd7Ws9YbPe",
    http_method="POST", http_content_type="application/json", additional_headers="",
    body_template='{"text": "{{ event }} {{ model }} {{ data.display }} by {{ username }}"}',
    secret="", ssl_verification=True, ca_file_path=None, description="Posts every change to the team channel")
add("extras_webhook", id=2, **std(140, 512), custom_field_data={"owner": "itsm-team"}, name="ServiceNow CMDB sync",
    payload_url="https://netpoint-sync.service-now.example/api/x_np/cmdb/ingest", http_method="POST",
    http_content_type="application/json",
    additional_headers="Authorization: Basic bnBfc3luYzpTbjB3LXN5bmMtMjAyNCE=\nX-Source-System: netpoint",
    body_template="", secret="whsec_7f3a91c0d2b84e6f9a1d5c3b2e8f4a60", ssl_verification=True,
    ca_file_path="/etc/netpoint/ca/corp-root.pem", description="")
add("extras_webhook", id=3, **std(300), custom_field_data={}, name="Audit log collector",
    payload_url="http://10.10.0.250:8088/services/collector/raw", http_method="PUT",
    http_content_type="text/plain", additional_headers="X-Splunk-Token: 5e1c2f3a-7b8d-4c9e-a0f1-2b3c4d5e6f70",
    body_template="{{ timestamp }}\t{{ username }}\t{{ event }}\t{{ model }}\t{{ data.id }}",
    secret="audit-hmac-Qm9sdC1vbi1zZWNyZXQ", ssl_verification=False, ca_file_path=None,
    description="Plain HTTP inside the management VRF")

add("core_datasource", id=1, **std(120, 680), custom_field_data={}, name="config-templates", type="git",
    source_url="https://deploy-bot:glpat-Zx81kQv3mN7pR2sT@git.example.com/netops/config-templates.git",
    status="completed", enabled=True, ignore_rules=".git*\n*.md\ndrafts/",
    parameters={"branch": "main", "username": "deploy-bot", "password": "glpat-Zx81kQv3mN7pR2sT"},
    last_synced=at(680, 3600 * 3 + 17, 512034), description="Jinja templates for device configs", comments="")
add("core_datasource", id=2, **std(260, 672), custom_field_data={}, name="reports-archive", type="amazon-s3",
    source_url="s3://netpoint-reports/prod/", status="failed", enabled=True, ignore_rules="",
    parameters={"aws_access_key_id": "AKIAEXAMPLENETPOINT7", "aws_secret_access_key":
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYNETPOINTKEY", "region": "eu-central-1"},
    last_synced=at(672, 3600 * 3 + 4, 88120), description="", comments="Fails since the bucket policy change.")
add("core_datasource", id=3, **std(400), custom_field_data={}, name="local-scripts", type="local",
    source_url="file:///opt/netpoint/scripts", status="new", enabled=False, ignore_rules="", parameters=None,
    last_synced=None, description="", comments="")

# change log ---------------------------------------------------------------------

USERNAMES = {u[0]: u[1] for u in USERS}


def snapshot(row, t):
    out = {}
    for c, _ in TABLES[t]["cols"]:
        v = row[c]
        if isinstance(v, dt.datetime):
            v = iso(v)
        elif isinstance(v, Raw):
            v = str(v)
        out[c] = v
    out["tags"] = sorted(TAGS[tag - 1][1] for ct, obj, tag in TAGGED
                         if ct == CT.get(t.split("_", 1)[1]) and obj == row["id"])
    return out


def repr_of(t, row):
    for k in ("name", "address", "prefix", "model", "label"):
        if k in row and row[k]:
            return str(row[k])
    return "%s %d" % (t.split("_", 1)[1], row["id"])


CHANGES = []    # (time, user id or name, request key, action, table, row id, pre, post, repr, related)


def change(t, row, action, when, user, req, pre=None, post=None, related=None):
    CHANGES.append((when, user, req, action, t, row["id"] if row else None, pre, post,
                    repr_of(t, row) if row else None, related))


# creates: sites, racks, devices, a slice of prefixes and addresses
for t, who in [("dcim_site", 2), ("dcim_rack", 2), ("dcim_device", 5), ("ipam_prefix", 3),
               ("ipam_ipaddress", 5), ("dcim_cable", 3)]:
    for r in rows(t):
        if t == "ipam_ipaddress" and r["id"] > 20:
            continue
        post = snapshot(r, t)
        post["last_updated"] = post["created"] = iso(r["created"])
        related = None
        if t == "dcim_device":
            related = ("site", r["site_id"])
            post["primary_ip4_id"] = None
            post["primary_ip6_id"] = None
        # bulk imports share one request per day
        req = "%s-%s" % (t, r["created"].date()) if who == 5 else "%s-%d" % (t, r["id"])
        change(t, r, "create", r["created"], who, req, post=post, related=related)

# deleted devices and addresses: created, then removed
for did, name, dtype, role, site, rack, pos in DELETED_DEVICES:
    row = dict(id=did, name=name, device_type_id=dtype, role_id=role, site_id=site, rack_id=rack,
               position="%d.0" % pos, status="active", serial="", tenant_id=1)
    t0 = at(70 + did * 4, 3600 * 11)
    snap = {"id": did, "name": name, "device_type_id": dtype, "role_id": role, "site_id": site,
            "rack_id": rack, "position": "%d.0" % pos, "status": "active", "tenant_id": 1,
            "custom_field_data": {"warranty_end": None, "support_contract": None}, "tags": []}
    change("dcim_device", row, "create", t0, 2, "del-%d-a" % did, post=snap, related=("site", site))
    t1 = at(560 + (did - 41) * 30, 3600 * 15 + 120)
    gone = dict(snap, status="decommissioning")
    change("dcim_device", row, "update", t1 - dt.timedelta(days=6), 3, "del-%d-b" % did, pre=snap, post=gone,
           related=("site", site))
    change("dcim_device", row, "delete", t1, 3, "del-%d-c" % did, pre=gone, related=("site", site))
for k, ip_id in enumerate(DELETED_IPS):
    row = dict(id=ip_id, address="10.10.0.%d/24" % (90 + k))
    snap = {"id": ip_id, "address": row["address"], "status": "active", "role": "", "vrf_id": 1, "tags": []}
    change("ipam_ipaddress", row, "create", at(500 + k, 3600 * 10), 7, "ip-tmp-%d" % k, post=snap)
    change("ipam_ipaddress", row, "delete", at(530 + k, 3600 * 16), "tlindqvist", "ip-tmp-del", pre=snap)

# updates: status / description / tenant edits spread over the second year
UPD = []
for d in rows("dcim_device"):
    if d["id"] % 3 == 0:
        UPD.append(("dcim_device", d, {"description": ""}, {"description": d["description"] or "rack audit %d" % d["id"]}))
    if d["status"] in ("offline", "failed", "staged"):
        UPD.append(("dcim_device", d, {"status": "active"}, {"status": d["status"]}))
    if d["primary_ip4_id"]:
        UPD.append(("dcim_device", d, {"primary_ip4_id": None}, {"primary_ip4_id": d["primary_ip4_id"]}))
for r in rows("dcim_rack"):
    if r["tenant_id"]:
        UPD.append(("dcim_rack", r, {"tenant_id": None}, {"tenant_id": r["tenant_id"]}))
for s in rows("dcim_site"):
    UPD.append(("dcim_site", s, {"custom_field_data": {}}, {"custom_field_data": s["custom_field_data"]}))
for c in rows("dcim_cable"):
    a = by_id("dcim_interface", c["a_interface_id"])
    UPD.append(("dcim_interface", a, {"description": "", "cable_id": None, "cable_end": ""},
                {"description": a["description"], "cable_id": a["cable_id"], "cable_end": a["cable_end"]}))
for ip in rows("ipam_ipaddress")[:12]:
    if ip["dns_name"]:
        UPD.append(("ipam_ipaddress", ip, {"dns_name": ip["dns_name"].replace(".netpoint.example", ".np.local")},
                    {"dns_name": ip["dns_name"]}))
for n, (t, r, before, after) in enumerate(UPD):
    base = snapshot(r, t)
    pre = dict(base, **before)
    post = dict(base, **after)
    pre["last_updated"] = iso(r["created"])
    if t == "dcim_interface":
        # connecting a cable updates the A-end interface in the same request
        cable = by_id("dcim_cable", r["cable_id"])
        when = cable["created"] + dt.timedelta(seconds=1)
        req = "%s-%d" % ("dcim_cable", cable["id"])
        user = 3
        related = ("device", r["device_id"])
    else:
        when = r["last_updated"] if r["last_updated"] > r["created"] else r["created"] + dt.timedelta(hours=2)
        when -= dt.timedelta(minutes=n % 17)
        req = "upd-%d" % n
        user = [2, 3, 7, 1, 6, 3, "tlindqvist"][n % 7]
        if when > at(400) and user in ("tlindqvist", 6):
            user = 7        # left the company; successor takes over
        if when < at(390) and user == 7:
            user = 2        # not hired yet
        related = ("site", r["site_id"]) if t in ("dcim_device", "dcim_rack") else None
    post["last_updated"] = iso(when)
    change(t, r, "update", when, user, req, pre=pre, post=post, related=related)

CHANGES.sort(key=lambda c: (c[0], c[4], c[5]))
for i, (when, user, req, action, t, oid, pre, post, rep, related) in enumerate(CHANGES, 1):
    uid = user if isinstance(user, int) else None
    uname = USERNAMES[user] if isinstance(user, int) else user
    model = t.split("_", 1)[1]
    add("extras_objectchange", id=i, time=when, user_name=uname,
        request_id=str(uuid.UUID(hashlib.md5(("req:" + req).encode()).hexdigest(), version=4)),
        action=action, changed_object_id=oid, related_object_id=related[1] if related else None,
        object_repr=rep, prechange_data=pre, postchange_data=post, changed_object_type_id=CT[model],
        related_object_type_id=CT[related[0]] if related else None, user_id=uid)

# sequences: past the highest id, and past ids that were used and then deleted
SEQ_FLOOR = {"dcim_device": 43, "ipam_ipaddress": DELETED_IPS[-1]}


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------

def emit():
    o = []
    w = o.append

    def head(name, typ):
        w("--\n-- Name: %s; Type: %s; Schema: public; Owner: -\n--\n\n" % (name, typ))

    w("--\n-- PostgreSQL database dump\n--\n\n")
    w("SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n"
      "SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n"
      "SELECT pg_catalog.set_config('search_path', '', false);\nSET check_function_bodies = false;\n"
      "SET xmloption = content;\nSET client_min_messages = warning;\nSET row_security = off;\n\n")
    head("natural_sort", "COLLATION")
    w("CREATE COLLATION public.natural_sort (provider = icu, locale = 'und-u-kn-true');\n\n\n")
    head("dcim_rack_units_free(bigint)", "FUNCTION")
    w(FUNCTION + "\n\n\n")
    head("FUNCTION dcim_rack_units_free(p_rack bigint)", "COMMENT")
    w("COMMENT ON FUNCTION public.dcim_rack_units_free(p_rack bigint) IS "
      "'Rack units not taken by mounted devices (zero-U devices do not count).';\n\n\n")
    w("SET default_tablespace = '';\n\nSET default_table_access_method = heap;\n\n")

    for t in sorted(ORDER):
        spec = TABLES[t]
        head(t, "TABLE")
        lines = ["    %s %s" % (ident(c), d) for c, d in spec["cols"]]
        lines += ["    CONSTRAINT %s CHECK %s" % (n, e) for n, e in sorted(spec["checks"])]
        w("CREATE TABLE public.%s (\n%s\n);\n\n\n" % (t, ",\n".join(lines)))
        if spec["comment"]:
            head("TABLE %s" % t, "COMMENT")
            w("COMMENT ON TABLE public.%s IS '%s';\n\n\n" % (t, spec["comment"].replace("'", "''")))
        colpos = [c for c, _ in spec["cols"]]
        for c, text in sorted(spec["colcomments"].items(), key=lambda kv: colpos.index(kv[0])):
            head("COLUMN %s.%s" % (t, c), "COMMENT")
            w("COMMENT ON COLUMN public.%s.%s IS '%s';\n\n\n" % (t, ident(c), text.replace("'", "''")))
        if spec["identity"]:
            head("%s_id_seq" % t, "SEQUENCE")
            w("ALTER TABLE public.%s ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (\n"
              "    SEQUENCE NAME public.%s_id_seq\n    START WITH 1\n    INCREMENT BY 1\n"
              "    NO MINVALUE\n    NO MAXVALUE\n    CACHE 1\n);\n\n\n" % (t, t))
    head("dcim_device_summary", "VIEW")
    w(VIEW + "\n\n\n")
    head("VIEW dcim_device_summary", "COMMENT")
    w("COMMENT ON VIEW public.dcim_device_summary IS 'One row per device with names resolved, for reports.';\n\n\n")

    for t in sorted(ORDER):
        spec = TABLES[t]
        cols = [c for c, _ in spec["cols"]]
        head(t, "TABLE DATA")
        o[-1] = o[-1].replace("-- Name:", "-- Data for Name:")
        w("COPY public.%s (%s) FROM stdin;\n" % (t, ", ".join(ident(c) for c in cols)))
        for r in spec["rows"]:
            w("\t".join(copy_value(r[c]) for c in cols) + "\n")
        w("\\.\n\n\n")

    for t in sorted(ORDER):
        spec = TABLES[t]
        if not spec["identity"]:
            continue
        mx = max((r["id"] for r in spec["rows"]), default=0)
        mx = max(mx, SEQ_FLOOR.get(t, 0))
        head("%s_id_seq" % t, "SEQUENCE SET")
        w("SELECT pg_catalog.setval('public.%s_id_seq', %d, %s);\n\n\n" % (t, max(mx, 1), "true" if mx else "false"))

    cons = [(t, "%s_pkey" % t, "PRIMARY KEY (%s)" % PRIMARY[t]) for t in ORDER]
    cons += [(t, n, "UNIQUE (%s)" % ", ".join(cols)) for t, n, cols in UNIQUES]
    for t, n, body in sorted(cons, key=lambda c: (c[0], c[1])):
        head("%s %s" % (t, n), "CONSTRAINT")
        w("ALTER TABLE ONLY public.%s\n    ADD CONSTRAINT %s %s;\n\n\n" % (t, n, body))
    seen = set()
    for n, sql in sorted(INDEXES):
        assert n not in seen, n
        seen.add(n)
        head(n, "INDEX")
        w(sql + "\n\n\n")
    for t, n, col, ref in sorted(FKS, key=lambda f: (f[0], f[1])):
        head("%s %s" % (t, n), "FK CONSTRAINT")
        w("ALTER TABLE ONLY public.%s\n    ADD CONSTRAINT %s FOREIGN KEY (%s) REFERENCES public.%s(id) "
          "DEFERRABLE INITIALLY DEFERRED;\n\n\n" % (t, n, col, ref))
    w("--\n-- PostgreSQL database dump complete\n--\n\n")
    return "".join(o)


text = emit()
with open(OUT, "w", encoding="utf-8", newline="\n") as f:
    f.write(text)
total = sum(len(TABLES[t]["rows"]) for t in ORDER)
print("%s: %d tables, %d rows" % (OUT, len(ORDER), total), file=sys.stderr)
