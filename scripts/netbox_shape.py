"""A database with the shape of a real NetBox one, for scripts/bench.py (`--netbox-shape`).

NetPoint's own schema has 31 tables; a NetBox 4 database has about 190, most of them holding a
handful of rows, a few large ones (the search cache `extras_cachedvalue`, the changelog
`extras_objectchange`, interfaces, IP addresses, cables and their terminations, tagged items),
and several hundred indexes and constraints: Django's index on every foreign key, a
`varchar_pattern_ops` twin of every unique or indexed text column, unique constraints on
(parent, name), checks on every positive integer column, and generic foreign keys (a content
type and an object id).

`schema_sql()` creates the tables; `data_sql(scale)` fills them with generate_series, every
foreign key and unique constraint holding by construction; `constraints_sql()` adds the
constraints and indexes afterwards, as a dump's post-data would. Everything is deterministic:
the same scale gives the same rows. Only the Python standard library is used.
"""

import hashlib

# Rows at scale 1 in the large tables: about 610 MiB in all, most of it the search cache and the
# changelog. Every other table holds 0 to 40 rows. Foreign keys point in proportion (see spread()),
# so that one site's rows are about the same at every scale, as `--subset` needs.
LARGE = {
    "extras_cachedvalue": 1_500_000,
    "extras_objectchange": 300_000,
    "dcim_interface": 120_000,
    "extras_taggeditem": 100_000,
    "ipam_ipaddress": 60_000,
    "dcim_cabletermination": 60_000,
    "dcim_cable": 30_000,
    "dcim_cablepath": 30_000,
    "dcim_frontport": 20_000,
    "dcim_rearport": 20_000,
    "dcim_powerport": 12_000,
    "dcim_consoleport": 10_000,
    "dcim_device": 10_000,
    "ipam_prefix": 8_000,
    "ipam_vlan": 4_000,
    "dcim_rack": 1_500,
    "virtualization_virtualmachine": 2_000,
    "virtualization_vminterface": 6_000,
    "dcim_site": 300,
    "dcim_location": 600,
    "tenancy_contactassignment": 2_000,
    "extras_journalentry": 3_000,
    # One per site or per device, as in real data: a site's share of what they own stays the same
    # at every scale (a fixed handful would own ever more devices, VLANs and interfaces).
    "virtualization_cluster": 300,
    "ipam_vlangroup": 300,
    "dcim_module": 10_000,
}

# The tables, in an order where every foreign key points at an earlier table.
# kind: org (name, slug, description: NetBox's organizational models), tree (org in an MPTT
# tree), primary (name, status, comments), component (a device component), m2m (a join table),
# plain (its own columns only). fks: (column, table, nullable). generic: adds a content type and
# an object id. extra: (column, type) pairs.
TABLES = []


def table(name, kind, fks=(), generic=None, extra=(), unique=None):
    TABLES.append({"name": name, "kind": kind, "fks": list(fks), "generic": generic,
                   "extra": list(extra), "unique": unique})


def define():
    table("django_content_type", "plain", extra=[("app_label", "varchar(100)"), ("model", "varchar(100)")],
          unique=("app_label", "model"))
    table("django_migrations", "plain", extra=[("app", "varchar(255)"), ("name", "varchar(255)"),
                                               ("applied", "timestamptz")])
    table("django_session", "plain", extra=[("session_key", "varchar(40)"), ("session_data", "text"),
                                            ("expire_date", "timestamptz")])
    table("auth_permission", "plain", fks=[("content_type_id", "django_content_type", False)],
          extra=[("name", "varchar(255)"), ("codename", "varchar(100)")])
    table("users_group", "org")
    table("users_user", "plain", extra=[("username", "varchar(150)"), ("password", "varchar(128)"),
                                        ("email", "varchar(254)"), ("is_superuser", "boolean"),
                                        ("last_login", "timestamptz")], unique=("username",))
    table("users_user_groups", "m2m", fks=[("user_id", "users_user", False), ("group_id", "users_group", False)])
    table("users_group_permissions", "m2m",
          fks=[("group_id", "users_group", False), ("permission_id", "auth_permission", False)])
    table("users_user_user_permissions", "m2m",
          fks=[("user_id", "users_user", False), ("permission_id", "auth_permission", False)])
    table("users_token", "plain", fks=[("user_id", "users_user", False)],
          extra=[("key", "varchar(40)"), ("expires", "timestamptz"), ("write_enabled", "boolean")],
          unique=("key",))
    table("users_userconfig", "plain", fks=[("user_id", "users_user", False)], extra=[("data", "jsonb")])
    table("users_objectpermission", "org")
    for other, ref in (("groups", "users_group"), ("users", "users_user"),
                       ("object_types", "django_content_type")):
        table(f"users_objectpermission_{other}", "m2m",
              fks=[("objectpermission_id", "users_objectpermission", False), (f"{other[:-1]}_id", ref, False)])
    for name in ("association", "code", "nonce", "partial", "usersocialauth"):
        table(f"social_auth_{name}", "plain", extra=[("provider", "varchar(32)"), ("uid", "varchar(255)"),
                                                    ("extra_data", "jsonb")], unique=("provider", "uid"))
    table("core_datasource", "org", extra=[("type", "varchar(50)"), ("source_url", "varchar(200)")])
    table("core_datafile", "plain", fks=[("source_id", "core_datasource", False)],
          extra=[("path", "varchar(1000)"), ("size", "integer"), ("hash", "varchar(64)"), ("data", "bytea")],
          unique=("source_id", "path"))
    table("core_autosyncrecord", "plain", fks=[("datafile_id", "core_datafile", False)],
          generic="object")
    table("core_managedfile", "plain", fks=[("data_file_id", "core_datafile", True)],
          extra=[("file_root", "varchar(1000)"), ("file_path", "varchar(100)")])
    table("core_job", "plain", fks=[("user_id", "users_user", True)], generic="object",
          extra=[("name", "varchar(200)"), ("status", "varchar(30)"), ("data", "jsonb"), ("job_id", "uuid")])
    table("core_configrevision", "plain", extra=[("comment", "varchar(200)"), ("data", "jsonb")])

    table("tenancy_tenantgroup", "tree")
    table("tenancy_tenant", "org", fks=[("group_id", "tenancy_tenantgroup", True)])
    table("tenancy_contactgroup", "tree")
    table("tenancy_contactrole", "org")
    table("tenancy_contact", "primary", fks=[("group_id", "tenancy_contactgroup", True)],
          extra=[("title", "varchar(100)"), ("phone", "varchar(50)"), ("email", "varchar(254)")])
    table("tenancy_contactassignment", "plain",
          fks=[("contact_id", "tenancy_contact", False), ("role_id", "tenancy_contactrole", True)],
          generic="object", extra=[("priority", "varchar(50)")])

    table("extras_tag", "org", extra=[("color", "varchar(6)")])
    table("extras_tag_object_types", "m2m",
          fks=[("tag_id", "extras_tag", False), ("contenttype_id", "django_content_type", False)])
    table("ipam_rir", "org", extra=[("is_private", "boolean")])
    table("ipam_asnrange", "org", fks=[("rir_id", "ipam_rir", False), ("tenant_id", "tenancy_tenant", True)])
    table("ipam_asn", "primary", fks=[("rir_id", "ipam_rir", False), ("tenant_id", "tenancy_tenant", True)],
          extra=[("asn", "bigint")], unique=("asn",))

    table("circuits_provider", "org")
    table("circuits_provider_asns", "m2m", fks=[("provider_id", "circuits_provider", False),
                                                ("asn_id", "ipam_asn", False)])
    table("circuits_provideraccount", "primary", fks=[("provider_id", "circuits_provider", False)],
          extra=[("account", "varchar(100)")])
    table("circuits_providernetwork", "primary", fks=[("provider_id", "circuits_provider", False)],
          extra=[("service_id", "varchar(100)")])
    table("circuits_circuittype", "org", extra=[("color", "varchar(6)")])

    table("dcim_region", "tree")
    table("dcim_sitegroup", "tree")
    table("dcim_site", "primary", fks=[("region_id", "dcim_region", True), ("group_id", "dcim_sitegroup", True),
                                       ("tenant_id", "tenancy_tenant", True)],
          extra=[("slug", "varchar(100)"), ("facility", "varchar(50)"), ("time_zone", "varchar(63)"),
                 ("physical_address", "varchar(200)"), ("latitude", "numeric(8,6)"),
                 ("longitude", "numeric(9,6)")], unique=("slug",))
    table("dcim_site_asns", "m2m", fks=[("site_id", "dcim_site", False), ("asn_id", "ipam_asn", False)])
    table("dcim_location", "tree", fks=[("site_id", "dcim_site", False), ("tenant_id", "tenancy_tenant", True)],
          extra=[("status", "varchar(50)")])
    table("dcim_rackrole", "org", extra=[("color", "varchar(6)")])
    table("dcim_rack", "primary", fks=[("site_id", "dcim_site", False), ("location_id", "dcim_location", True),
                                       ("tenant_id", "tenancy_tenant", True), ("role_id", "dcim_rackrole", True)],
          extra=[("facility_id", "varchar(50)"), ("serial", "varchar(50)"), ("asset_tag", "varchar(50)"),
                 ("u_height", "smallint"), ("starting_unit", "smallint"), ("weight", "numeric(8,2)"),
                 ("outer_width", "smallint"), ("outer_depth", "smallint"), ("mounting_depth", "smallint")])
    table("dcim_rackreservation", "plain", fks=[("rack_id", "dcim_rack", False), ("user_id", "users_user", False),
                                                ("tenant_id", "tenancy_tenant", True)],
          extra=[("units", "smallint[]"), ("description", "varchar(200)"), ("comments", "text")])
    table("dcim_manufacturer", "org")
    table("dcim_devicetype", "primary", fks=[("manufacturer_id", "dcim_manufacturer", False)],
          extra=[("model", "varchar(100)"), ("slug", "varchar(100)"), ("part_number", "varchar(50)"),
                 ("u_height", "numeric(4,1)"), ("is_full_depth", "boolean"), ("airflow", "varchar(50)"),
                 ("front_image", "varchar(100)"), ("rear_image", "varchar(100)"), ("weight", "numeric(8,2)"),
                 ("console_port_template_count", "integer"), ("interface_template_count", "integer"),
                 ("front_port_template_count", "integer"), ("rear_port_template_count", "integer")],
          unique=("manufacturer_id", "slug"))
    table("dcim_moduletype", "primary", fks=[("manufacturer_id", "dcim_manufacturer", False)],
          extra=[("model", "varchar(100)"), ("part_number", "varchar(50)"), ("weight", "numeric(8,2)")])
    table("dcim_devicerole", "org", extra=[("color", "varchar(6)"), ("vm_role", "boolean")])
    table("dcim_platform", "org", fks=[("manufacturer_id", "dcim_manufacturer", True)])
    for name in ("consoleport", "consoleserverport", "powerport", "poweroutlet", "interface", "frontport",
                 "rearport", "modulebay", "devicebay", "inventoryitem"):
        table(f"dcim_{name}template", "component", fks=[("device_type_id", "dcim_devicetype", True),
                                                       ("module_type_id", "dcim_moduletype", True)])
    table("virtualization_clustertype", "org")
    table("virtualization_clustergroup", "org")
    table("virtualization_cluster", "primary",
          fks=[("type_id", "virtualization_clustertype", False), ("group_id", "virtualization_clustergroup", True),
               ("tenant_id", "tenancy_tenant", True), ("site_id", "dcim_site", True)])
    table("dcim_virtualchassis", "primary", extra=[("domain", "varchar(30)")])
    table("dcim_device", "primary",
          fks=[("device_type_id", "dcim_devicetype", False), ("role_id", "dcim_devicerole", False),
               ("tenant_id", "tenancy_tenant", True), ("platform_id", "dcim_platform", True),
               ("site_id", "dcim_site", False), ("location_id", "dcim_location", True),
               ("rack_id", "dcim_rack", True), ("cluster_id", "virtualization_cluster", True),
               ("virtual_chassis_id", "dcim_virtualchassis", True)],
          extra=[("serial", "varchar(50)"), ("asset_tag", "varchar(50)"), ("position", "numeric(4,1)"),
                 ("face", "varchar(50)"), ("airflow", "varchar(50)"), ("vc_position", "smallint"),
                 ("vc_priority", "smallint"), ("latitude", "numeric(8,6)"), ("longitude", "numeric(9,6)"),
                 ("local_context_data", "jsonb"), ("console_port_count", "integer"),
                 ("interface_count", "integer"), ("front_port_count", "integer"), ("rear_port_count", "integer")])
    table("dcim_module", "primary", fks=[("device_id", "dcim_device", False),
                                         ("module_type_id", "dcim_moduletype", False)],
          extra=[("serial", "varchar(50)"), ("asset_tag", "varchar(50)")])
    table("dcim_virtualdevicecontext", "primary", fks=[("device_id", "dcim_device", True),
                                                       ("tenant_id", "tenancy_tenant", True)],
          extra=[("identifier", "smallint")])
    table("dcim_cable", "primary", fks=[("tenant_id", "tenancy_tenant", True)],
          extra=[("type", "varchar(50)"), ("label", "varchar(100)"), ("color", "varchar(6)"),
                 ("length", "numeric(8,2)"), ("length_unit", "varchar(50)")])
    table("dcim_cablepath", "plain", extra=[("path", "jsonb"), ("is_active", "boolean"),
                                            ("is_complete", "boolean"), ("is_split", "boolean"),
                                            ("_nodes", "varchar(40)[]")])
    table("dcim_powerpanel", "primary", fks=[("site_id", "dcim_site", False),
                                             ("location_id", "dcim_location", True)])
    table("dcim_powerfeed", "primary", fks=[("power_panel_id", "dcim_powerpanel", False),
                                            ("rack_id", "dcim_rack", True)],
          extra=[("voltage", "smallint"), ("amperage", "smallint"), ("max_utilization", "smallint")])
    for name in ("consoleport", "consoleserverport", "powerport", "poweroutlet", "rearport", "frontport",
                 "modulebay", "devicebay", "inventoryitem"):
        table(f"dcim_{name}", "component", fks=[("device_id", "dcim_device", False),
                                               ("module_id", "dcim_module", True)])
    table("dcim_inventoryitemrole", "org", extra=[("color", "varchar(6)")])
    table("ipam_vlangroup", "org", generic="scope", extra=[("min_vid", "smallint"), ("max_vid", "smallint")])
    table("ipam_role", "org", extra=[("weight", "smallint")])
    table("ipam_vlan", "primary", fks=[("site_id", "dcim_site", True), ("group_id", "ipam_vlangroup", True),
                                       ("tenant_id", "tenancy_tenant", True), ("role_id", "ipam_role", True)],
          extra=[("vid", "smallint")])
    table("ipam_vrf", "primary", fks=[("tenant_id", "tenancy_tenant", True)],
          extra=[("rd", "varchar(21)"), ("enforce_unique", "boolean")])
    table("ipam_routetarget", "primary", fks=[("tenant_id", "tenancy_tenant", True)])
    for side in ("import", "export"):
        table(f"ipam_vrf_{side}_targets", "m2m", fks=[("vrf_id", "ipam_vrf", False),
                                                     ("routetarget_id", "ipam_routetarget", False)])
    table("wireless_wirelesslangroup", "tree")
    table("wireless_wirelesslan", "primary", fks=[("group_id", "wireless_wirelesslangroup", True),
                                                  ("vlan_id", "ipam_vlan", True),
                                                  ("tenant_id", "tenancy_tenant", True)],
          extra=[("ssid", "varchar(32)"), ("auth_type", "varchar(50)"), ("auth_psk", "varchar(64)")])
    table("dcim_interface", "component",
          fks=[("device_id", "dcim_device", False), ("module_id", "dcim_module", True),
               ("parent_id", "dcim_interface", True), ("lag_id", "dcim_interface", True),
               ("untagged_vlan_id", "ipam_vlan", True), ("vrf_id", "ipam_vrf", True),
               ("cable_id", "dcim_cable", True), ("_path_id", "dcim_cablepath", True)],
          extra=[("enabled", "boolean"), ("mac_address", "macaddr"), ("mtu", "integer"), ("mode", "varchar(50)"),
                 ("speed", "integer"), ("duplex", "varchar(50)"), ("mgmt_only", "boolean"),
                 ("wwn", "macaddr8"), ("rf_role", "varchar(30)"), ("tx_power", "smallint")])
    for other, ref in (("tagged_vlans", "ipam_vlan"), ("vdcs", "dcim_virtualdevicecontext"),
                       ("wireless_lans", "wireless_wirelesslan")):
        table(f"dcim_interface_{other}", "m2m", fks=[("interface_id", "dcim_interface", False),
                                                    (f"{other.split('_')[-1][:-1]}_id", ref, False)])
    table("wireless_wirelesslink", "primary", fks=[("interface_a_id", "dcim_interface", False),
                                                   ("interface_b_id", "dcim_interface", False),
                                                   ("tenant_id", "tenancy_tenant", True)],
          extra=[("ssid", "varchar(32)")])
    table("dcim_cabletermination", "plain", fks=[("cable_id", "dcim_cable", False),
                                                 ("_device_id", "dcim_device", True),
                                                 ("_rack_id", "dcim_rack", True),
                                                 ("_location_id", "dcim_location", True),
                                                 ("_site_id", "dcim_site", True)],
          generic="termination", extra=[("cable_end", "varchar(1)")],
          unique=("termination_type_id", "termination_id"))

    table("circuits_circuit", "primary",
          fks=[("provider_id", "circuits_provider", False), ("type_id", "circuits_circuittype", False),
               ("tenant_id", "tenancy_tenant", True), ("provider_account_id", "circuits_provideraccount", True)],
          extra=[("cid", "varchar(100)"), ("install_date", "date"), ("commit_rate", "integer")])
    table("circuits_circuittermination", "plain",
          fks=[("circuit_id", "circuits_circuit", False), ("site_id", "dcim_site", True),
               ("provider_network_id", "circuits_providernetwork", True), ("cable_id", "dcim_cable", True)],
          extra=[("term_side", "varchar(1)"), ("port_speed", "integer"), ("xconnect_id", "varchar(50)")])
    table("circuits_circuit_terminations_a", "plain", fks=[("circuit_id", "circuits_circuit", False)])

    table("ipam_aggregate", "primary", fks=[("rir_id", "ipam_rir", False), ("tenant_id", "tenancy_tenant", True)],
          extra=[("prefix", "cidr"), ("date_added", "date")])
    table("ipam_prefix", "primary",
          fks=[("site_id", "dcim_site", True), ("vrf_id", "ipam_vrf", True), ("tenant_id", "tenancy_tenant", True),
               ("vlan_id", "ipam_vlan", True), ("role_id", "ipam_role", True)],
          extra=[("prefix", "cidr"), ("is_pool", "boolean"), ("mark_utilized", "boolean"),
                 ("_depth", "smallint"), ("_children", "integer")])
    table("ipam_iprange", "primary", fks=[("vrf_id", "ipam_vrf", True), ("tenant_id", "tenancy_tenant", True),
                                          ("role_id", "ipam_role", True)],
          extra=[("start_address", "inet"), ("end_address", "inet"), ("size", "integer")])
    table("ipam_ipaddress", "primary",
          fks=[("vrf_id", "ipam_vrf", True), ("tenant_id", "tenancy_tenant", True),
               ("nat_inside_id", "ipam_ipaddress", True)],
          generic="assigned_object", extra=[("address", "inet"), ("role", "varchar(50)"),
                                            ("dns_name", "varchar(255)")])
    table("ipam_fhrpgroup", "primary", extra=[("group_id", "smallint"), ("protocol", "varchar(50)"),
                                              ("auth_type", "varchar(50)"), ("auth_key", "varchar(255)")])
    table("ipam_fhrpgroupassignment", "plain", fks=[("group_id", "ipam_fhrpgroup", False)],
          generic="interface", extra=[("priority", "smallint")])
    table("ipam_servicetemplate", "primary", extra=[("protocol", "varchar(50)"), ("ports", "integer[]")])
    table("virtualization_virtualmachine", "primary",
          fks=[("cluster_id", "virtualization_cluster", True), ("tenant_id", "tenancy_tenant", True),
               ("platform_id", "dcim_platform", True), ("role_id", "dcim_devicerole", True),
               ("site_id", "dcim_site", True), ("device_id", "dcim_device", True)],
          extra=[("vcpus", "numeric(6,2)"), ("memory", "integer"), ("disk", "integer"),
                 ("local_context_data", "jsonb"), ("interface_count", "integer")])
    table("virtualization_virtualdisk", "component",
          fks=[("virtual_machine_id", "virtualization_virtualmachine", False)], extra=[("size", "integer")])
    table("virtualization_vminterface", "component",
          fks=[("virtual_machine_id", "virtualization_virtualmachine", False),
               ("parent_id", "virtualization_vminterface", True), ("untagged_vlan_id", "ipam_vlan", True),
               ("vrf_id", "ipam_vrf", True)],
          extra=[("enabled", "boolean"), ("mac_address", "macaddr"), ("mtu", "integer"), ("mode", "varchar(50)")])
    table("virtualization_vminterface_tagged_vlans", "m2m",
          fks=[("vminterface_id", "virtualization_vminterface", False), ("vlan_id", "ipam_vlan", False)])
    table("ipam_service", "primary", fks=[("device_id", "dcim_device", True),
                                          ("virtual_machine_id", "virtualization_virtualmachine", True)],
          extra=[("protocol", "varchar(50)"), ("ports", "integer[]")])
    table("ipam_service_ipaddresses", "m2m", fks=[("service_id", "ipam_service", False),
                                                  ("ipaddress_id", "ipam_ipaddress", False)])

    table("vpn_ikeproposal", "primary", extra=[("authentication_method", "varchar(50)"),
                                               ("encryption_algorithm", "varchar(50)"), ("group", "smallint")])
    table("vpn_ikepolicy", "primary", extra=[("version", "smallint"), ("mode", "varchar(50)"),
                                             ("preshared_key", "text")])
    table("vpn_ikepolicy_proposals", "m2m", fks=[("ikepolicy_id", "vpn_ikepolicy", False),
                                                 ("ikeproposal_id", "vpn_ikeproposal", False)])
    table("vpn_ipsecproposal", "primary", extra=[("encryption_algorithm", "varchar(50)"),
                                                 ("sa_lifetime_seconds", "integer")])
    table("vpn_ipsecpolicy", "primary", extra=[("pfs_group", "smallint")])
    table("vpn_ipsecpolicy_proposals", "m2m", fks=[("ipsecpolicy_id", "vpn_ipsecpolicy", False),
                                                   ("ipsecproposal_id", "vpn_ipsecproposal", False)])
    table("vpn_ipsecprofile", "primary", fks=[("ike_policy_id", "vpn_ikepolicy", False),
                                              ("ipsec_policy_id", "vpn_ipsecpolicy", False)],
          extra=[("mode", "varchar(50)")])
    table("vpn_tunnelgroup", "org")
    table("vpn_tunnel", "primary", fks=[("group_id", "vpn_tunnelgroup", True),
                                        ("ipsec_profile_id", "vpn_ipsecprofile", True),
                                        ("tenant_id", "tenancy_tenant", True)],
          extra=[("encapsulation", "varchar(50)"), ("tunnel_id", "bigint")])
    table("vpn_tunneltermination", "plain", fks=[("tunnel_id", "vpn_tunnel", False),
                                                 ("outside_ip_id", "ipam_ipaddress", True)],
          generic="termination", extra=[("role", "varchar(50)")])
    table("vpn_l2vpn", "primary", fks=[("tenant_id", "tenancy_tenant", True)],
          extra=[("type", "varchar(50)"), ("identifier", "bigint")])
    for side in ("import", "export"):
        table(f"vpn_l2vpn_{side}_targets", "m2m", fks=[("l2vpn_id", "vpn_l2vpn", False),
                                                      ("routetarget_id", "ipam_routetarget", False)])
    table("vpn_l2vpntermination", "plain", fks=[("l2vpn_id", "vpn_l2vpn", False)],
          generic="assigned_object")

    table("extras_customfieldchoiceset", "org", extra=[("extra_choices", "varchar(100)[][]"),
                                                       ("order_alphabetically", "boolean")])
    table("extras_customfield", "org", fks=[("choice_set_id", "extras_customfieldchoiceset", True)],
          extra=[("type", "varchar(50)"), ("label", "varchar(50)"), ("required", "boolean"),
                 ("weight", "smallint"), ("default", "jsonb"), ("validation_regex", "varchar(500)")])
    table("extras_customlink", "org", extra=[("link_text", "text"), ("link_url", "text"), ("weight", "smallint")])
    table("extras_exporttemplate", "org", fks=[("data_source_id", "core_datasource", True),
                                               ("data_file_id", "core_datafile", True)],
          extra=[("template_code", "text"), ("mime_type", "varchar(50)")])
    table("extras_savedfilter", "org", fks=[("user_id", "users_user", True)],
          extra=[("weight", "smallint"), ("parameters", "jsonb")])
    table("extras_webhook", "org", extra=[("payload_url", "varchar(500)"), ("http_method", "varchar(30)"),
                                          ("secret", "varchar(255)"), ("ssl_verification", "boolean")])
    table("extras_eventrule", "org", generic="action_object",
          extra=[("type_create", "boolean"), ("type_update", "boolean"), ("conditions", "jsonb")])
    for owner in ("customfield", "customlink", "exporttemplate", "savedfilter", "eventrule"):
        table(f"extras_{owner}_object_types", "m2m", fks=[(f"{owner}_id", f"extras_{owner}", False),
                                                         ("contenttype_id", "django_content_type", False)])
    table("extras_configtemplate", "org", fks=[("data_source_id", "core_datasource", True),
                                               ("data_file_id", "core_datafile", True)],
          extra=[("template_code", "text"), ("environment_params", "jsonb")])
    table("extras_configcontext", "org", fks=[("data_source_id", "core_datasource", True),
                                              ("data_file_id", "core_datafile", True)],
          extra=[("weight", "smallint"), ("is_active", "boolean"), ("data", "jsonb")])
    for other, ref in (("regions", "dcim_region"), ("site_groups", "dcim_sitegroup"), ("sites", "dcim_site"),
                       ("locations", "dcim_location"), ("device_types", "dcim_devicetype"),
                       ("roles", "dcim_devicerole"), ("platforms", "dcim_platform"),
                       ("cluster_types", "virtualization_clustertype"),
                       ("cluster_groups", "virtualization_clustergroup"), ("clusters", "virtualization_cluster"),
                       ("tenant_groups", "tenancy_tenantgroup"), ("tenants", "tenancy_tenant"),
                       ("tags", "extras_tag")):
        table(f"extras_configcontext_{other}", "m2m", fks=[("configcontext_id", "extras_configcontext", False),
                                                          (f"{other.rstrip('s')}_id", ref, False)])
    table("extras_imageattachment", "plain", generic="object",
          extra=[("image", "varchar(100)"), ("image_height", "smallint"), ("image_width", "smallint"),
                 ("name", "varchar(50)")])
    table("extras_journalentry", "plain", fks=[("created_by_id", "users_user", True)],
          generic="assigned_object", extra=[("kind", "varchar(30)"), ("comments", "text")])
    table("extras_bookmark", "plain", fks=[("user_id", "users_user", False)], generic="object",
          unique=("object_type_id", "object_id", "user_id"))
    table("extras_dashboard", "plain", fks=[("user_id", "users_user", False)],
          extra=[("layout", "jsonb"), ("config", "jsonb")], unique=("user_id",))
    table("extras_scriptmodule", "plain", fks=[("data_source_id", "core_datasource", True)],
          extra=[("file_root", "varchar(1000)"), ("file_path", "varchar(100)")])
    table("extras_script", "plain", fks=[("module_id", "extras_scriptmodule", False)],
          extra=[("name", "varchar(79)"), ("is_executable", "boolean")], unique=("module_id", "name"))
    table("extras_branch", "org", fks=[("user_id", "users_user", True)])
    table("extras_stagedchange", "plain", fks=[("branch_id", "extras_branch", False)], generic="object",
          extra=[("action", "varchar(20)"), ("data", "jsonb")])
    table("extras_taggeditem", "plain", fks=[("tag_id", "extras_tag", False)], generic="content",
          unique=None)
    table("extras_cachedvalue", "cache")
    table("extras_objectchange", "changelog")
    # Plug-in style tables NetBox installations commonly carry.
    for plugin, models in (("netbox_bgp", ("community", "routingpolicy", "routingpolicyrule", "prefixlist",
                                           "prefixlistrule", "bgpsession", "bgppeergroup")),
                           ("netbox_topology_views", ("coordinate", "coordinategroup", "savedtopology",
                                                      "individualoptions")),
                           ("netbox_inventory", ("asset", "supplier", "purchase", "delivery", "contract", "vendor",
                                                 "warranty", "location",
                                                 "inventoryitemtype", "inventoryitemgroup"))):
        for model in models:
            table(f"{plugin}_{model}", "primary", fks=[("tenant_id", "tenancy_tenant", True)])


define()
BY_NAME = {t["name"]: t for t in TABLES}
# django_content_type holds one row per table, in TABLES' order, named as Django names a
# model's table (`<app_label>_<model>`), so that generic pairs resolve to tables.
CONTENT_TYPE_ID = {t["name"]: i + 1 for i, t in enumerate(TABLES)}
# What the generic pairs of the large tables point at (round robin over the list); every other
# generic pair points at devices.
GENERIC_TARGETS = {
    "ipam_ipaddress": ["dcim_interface"],
    "dcim_cabletermination": ["dcim_interface"],
    "extras_taggeditem": ["dcim_device", "dcim_interface", "ipam_ipaddress"],
    "tenancy_contactassignment": ["dcim_site", "dcim_device"],
    "extras_imageattachment": ["dcim_device", "dcim_rack"],
    "ipam_vlangroup": ["dcim_site"],
    "ipam_fhrpgroupassignment": ["dcim_interface"],
    "vpn_tunneltermination": ["dcim_interface"],
    "vpn_l2vpntermination": ["dcim_interface"],
}
DEFAULT_GENERIC_TARGETS = ["dcim_device"]
BASE_TIME = "timestamptz '2024-01-01 00:00:00+00'"


def small_rows(name):
    """0 to 40 rows, fixed per table."""
    digest = hashlib.sha256(name.encode()).digest()
    return [0, 1, 2, 3, 4, 6, 8, 12, 20, 40][digest[0] % 10]


def row_counts(scale):
    counts = {}
    for t in TABLES:
        name = t["name"]
        if name in LARGE:
            counts[name] = max(10, round(LARGE[name] * scale))
        elif name == "django_content_type":
            counts[name] = len(TABLES)
        else:
            counts[name] = small_rows(name)
    # Every table a NOT NULL foreign key points at has rows; a join table never outgrows its pairs.
    for t in reversed(TABLES):
        if counts[t["name"]] == 0:
            continue
        for _, ref, nullable in t["fks"]:
            if not nullable and ref != t["name"]:
                counts[ref] = max(counts[ref], 1)
    for t in TABLES:
        if t["kind"] == "m2m":
            (_, a, _), (_, b, _) = t["fks"]
            counts[t["name"]] = min(counts[t["name"]], counts[a] * counts[b])
    return counts


def columns(t):
    """(name, type, not null) of a table, in order; `id` first."""
    kind = t["kind"]
    cols = [("id", "bigint GENERATED BY DEFAULT AS IDENTITY", True)]
    if kind == "cache":
        return [("id", "uuid", True), ("timestamp", "timestamptz", True),
                ("object_id", "bigint", True), ("field", "varchar(200)", True), ("type", "varchar(30)", True),
                ("value", "text", True), ("weight", "smallint", True),
                ("object_type_id", "integer", True)]
    if kind == "changelog":
        return cols + [("time", "timestamptz", True), ("user_name", "varchar(150)", True),
                       ("request_id", "uuid", True), ("action", "varchar(50)", True),
                       ("changed_object_id", "bigint", True), ("related_object_id", "bigint", False),
                       ("object_repr", "varchar(200)", True), ("prechange_data", "jsonb", False),
                       ("postchange_data", "jsonb", False), ("changed_object_type_id", "integer", True),
                       ("related_object_type_id", "integer", False), ("user_id", "bigint", False)]
    if kind in ("org", "tree", "primary", "component"):
        cols += [("created", "timestamptz", False), ("last_updated", "timestamptz", False),
                 ("custom_field_data", "jsonb", True)]
    if kind in ("org", "tree"):
        cols += [("name", "varchar(100)", True), ("slug", "varchar(100)", True), ("description", "varchar(200)", True)]
    if kind == "tree":
        cols += [("parent_id", "bigint", False), ("lft", "integer", True), ("rght", "integer", True),
                 ("tree_id", "integer", True), ("level", "integer", True)]
    if kind == "primary":
        cols += [("name", "varchar(100)", True), ("status", "varchar(50)", True),
                 ("description", "varchar(200)", True), ("comments", "text", True)]
    if kind == "component":
        cols += [("name", "varchar(64)", True), ("_name", "varchar(100)", True), ("label", "varchar(64)", True),
                 ("description", "varchar(200)", True), ("type", "varchar(50)", True),
                 ("mark_connected", "boolean", True), ("cable_end", "varchar(1)", True)]
    for column, type_ in t["extra"]:
        cols.append((column, type_, False))
    for column, _, nullable in t["fks"]:
        cols.append((column, "bigint" if BY_NAME[_]["kind"] != "cache" else "uuid", not nullable))
    if t["generic"]:
        g = t["generic"]
        cols += [(f"{g}_type_id", "integer", g not in ("scope",)), (f"{g}_id", "bigint", g not in ("scope",))]
    return cols


RESERVED = {"group", "default"}


def q(column):
    return f'"{column}"' if column in RESERVED else column


def schema_sql():
    out = ["set client_min_messages = warning;"]
    for t in TABLES:
        body = ",\n    ".join(f"{q(n)} {ty}{' NOT NULL' if nn else ''}" for n, ty, nn in columns(t))
        out.append(f"CREATE TABLE public.{t['name']} (\n    {body}\n);")
    return "\n".join(out) + "\n"


def spread(size, n):
    """The row that row g of n rows points at in a table of size rows, in proportion: consecutive
    rows share a parent, so what belongs to one site stays together, as in real data, and a
    site's share of every table is the same at every scale."""
    return f"1 + ((g - 1)::bigint * {size}) / {n}"


def generic_target(t, counts, n):
    """The tables the generic pair of table t points at, row g at the (g mod count)-th; a pair
    that must be unique points at a table with a row for each of its n rows."""
    targets = GENERIC_TARGETS.get(t["name"], DEFAULT_GENERIC_TARGETS)
    targets = [x for x in targets if counts[x] > 0] or ["django_content_type"]
    if t["unique"] and any(counts[x] < n for x in targets):
        targets = ["django_content_type"]  # unique (type, id): a table with a row for each g
    return targets


def value(t, column, type_, counts, n):
    """A deterministic value for row g of table t (n rows)."""
    name = t["name"]
    fk = {c: ref for c, ref, _ in t["fks"]}
    if column in fk:
        ref = fk[column]
        size = counts[ref] if ref != name else 0
        nullable = next(nl for c, _, nl in t["fks"] if c == column)
        if ref == name:  # the previous row, within groups of four (an interface's parent, a LAG)
            return "case when g % 4 <> 1 then g - 1 end"
        if size == 0:
            return "null"
        expr = spread(size, n)
        return f"case when g % 3 = 0 then null else {expr} end" if nullable and size < n else expr
    if t["generic"] and column in (f"{t['generic']}_type_id", f"{t['generic']}_id"):
        targets = generic_target(t, counts, n)
        k = len(targets)
        if column.endswith("_type_id"):
            if k == 1:
                return str(CONTENT_TYPE_ID[targets[0]])
            cases = " ".join(f"when {i} then {CONTENT_TYPE_ID[x]}" for i, x in enumerate(targets))
            return f"case g % {k} {cases} end"
        if targets == ["django_content_type"] and t["unique"]:
            return "g"
        if k == 1:
            return spread(counts[targets[0]], n)
        cases = " ".join(f"when {i} then {spread(counts[x], n)}" for i, x in enumerate(targets))
        return f"case g % {k} {cases} end"
    if column in ("created", "last_updated", "timestamp", "time", "applied", "expire_date", "last_login",
                  "expires"):
        return f"{BASE_TIME} + g * interval '17 seconds'"
    if column == "custom_field_data":
        return "case when g % 4 = 0 then jsonb_build_object('asset_owner', 'team-' || (g % 9)) else '{}' end"
    if column in ("name", "slug", "username", "key", "session_key", "cid", "uid", "path", "model") and type_.startswith("varchar"):
        return f"'{column[:4]}-' || g"
    if column == "_name":
        return "lpad(g::text, 9, '0')"
    if column == "app_label":
        return "'app' || (g % 12)"
    if column in ("lft",):
        return "2 * g"
    if column in ("rght",):
        return "2 * g + 1"
    if column in ("tree_id", "level"):
        return "g % 5"
    if column == "_nodes":  # a cable path's nodes: two interfaces of the block the path serves
        ct, size = CONTENT_TYPE_ID["dcim_interface"], counts["dcim_interface"]
        first = spread(size, n)
        return f"array['{ct}:' || ({first}), '{ct}:' || least({first} + 1, {size})]::varchar(40)[]"
    if type_.endswith("[]"):
        return "null"
    if type_.startswith("varchar"):
        width = int(type_[8:-1]) if type_[7:8] == "(" else 50
        return f"left('{column}-' || md5(g::text), {min(width, 40)})"
    if type_ == "text":
        return "case when g % 5 = 0 then 'notes about ' || md5(g::text) else '' end"
    if type_ in ("integer", "smallint", "bigint"):
        return "g % 30000"
    if type_.startswith("numeric"):
        return "(g % 40)::numeric / 4"
    if type_ == "boolean":
        return "g % 2 = 0"
    if type_ == "jsonb":
        return "jsonb_build_object('k', g % 100, 'v', md5(g::text))"
    if type_ == "uuid":
        return "md5(g::text || 'u')::uuid"
    if type_ == "macaddr":
        return ("('02:00:00:' || lpad(to_hex((g >> 16) % 256), 2, '0') || ':' || "
                "lpad(to_hex((g >> 8) % 256), 2, '0') || ':' || lpad(to_hex(g % 256), 2, '0'))::macaddr")
    if type_ == "macaddr8":
        return "null"
    if type_ == "inet":
        return "'10.0.0.0'::inet + g * 4"
    if type_ == "cidr":
        return "('10.0.0.0'::inet + g * 4)::cidr"
    if type_ == "date":
        return "date '2023-01-01' + (g % 700)"
    if type_ == "bytea":
        return "decode(md5(g::text), 'hex')"
    return "null"


def data_sql(scale):
    counts = row_counts(scale)
    out = ["set synchronous_commit = off;"]
    for t in TABLES:
        name, n = t["name"], counts[t["name"]]
        if n == 0:
            continue
        if t["kind"] == "cache":
            out.append(f"""INSERT INTO public.{name} SELECT md5(g::text || 'c')::uuid, {BASE_TIME} + g * interval '1 second',
  1 + g / 6, (array['name', 'description', 'comments', 'serial', 'asset_tag', 'label'])[1 + g % 6],
  'str', left('value ' || md5(g::text), 12 + g % 26), 50 + g % 1000,
  1 + (g % {counts['django_content_type']}) FROM generate_series(1, {n}) g;""")
            continue
        if t["kind"] == "changelog":
            users = counts["users_user"]
            ctypes = counts["django_content_type"]
            out.append(f"""INSERT INTO public.{name} (time, user_name, request_id, action, changed_object_id,
  related_object_id, object_repr, prechange_data, postchange_data, changed_object_type_id,
  related_object_type_id, user_id)
SELECT {BASE_TIME} + g * interval '3 seconds', 'user-' || (g % {users}), md5((g / 4)::text)::uuid,
  (array['create', 'update', 'delete'])[1 + g % 3], g / 2, case when g % 2 = 0 then g / 5 end,
  'object ' || g,
  case when g % 3 <> 0 then jsonb_build_object('name', 'eth' || g, 'description', md5(g::text),
    'mtu', 1500, 'enabled', true, 'custom_fields', jsonb_build_object('owner', 'team-' || g % 7),
    'tags', jsonb_build_array('core', 'edge')) end,
  case when g % 3 <> 2 then jsonb_build_object('name', 'eth' || g, 'description', md5((g + 1)::text),
    'mtu', 9000, 'enabled', g % 2 = 0, 'custom_fields', jsonb_build_object('owner', 'team-' || g % 5),
    'tags', jsonb_build_array('core')) end,
  1 + g % {ctypes}, case when g % 2 = 0 then 1 + g % {ctypes} end, 1 + g % {users}
FROM generate_series(1, {n}) g;""")
            continue
        if name == "django_content_type":
            rows = ", ".join(f"({CONTENT_TYPE_ID[x['name']]}, '{x['name'].split('_', 1)[0]}', "
                             f"'{x['name'].split('_', 1)[1]}')" for x in TABLES)
            out.append(f"INSERT INTO public.{name} (id, app_label, model) VALUES {rows};")
            out.append(f"SELECT setval(pg_get_serial_sequence('public.{name}', 'id'), {len(TABLES)});")
            continue
        cols = [c for c in columns(t) if c[0] != "id"]
        if t["kind"] == "m2m":
            (ca, a, _), (cb, b, _) = t["fks"]
            size = counts[a]
            exprs = [f"1 + (g - 1) % {size}", f"1 + ((g - 1) / {size}) % {counts[b]}"]
            names = [ca, cb]
        else:
            names = [c[0] for c in cols]
            exprs = [value(t, c, ty, counts, n) for c, ty, _ in cols]
        out.append(f"INSERT INTO public.{name} ({', '.join(map(q, names))}) SELECT {', '.join(exprs)} "
                   f"FROM generate_series(1, {n}) g;")
    return "\n".join(out) + "\n"


def constraints_sql():
    """Primary keys, uniques, checks, foreign keys and indexes, as Django would have made them."""
    out = []
    n = 0

    def short(name):
        nonlocal n
        n += 1
        return f"{name[:40]}_{hashlib.sha256(f'{name}{n}'.encode()).hexdigest()[:8]}"

    for t in TABLES:
        name = t["name"]
        cols = columns(t)
        out.append(f"ALTER TABLE ONLY public.{name} ADD CONSTRAINT {name}_pkey PRIMARY KEY (id);")
        uniques = []
        if t["unique"]:
            uniques.append(t["unique"])
        if t["kind"] in ("org", "tree"):
            uniques += [("name",), ("slug",)]
        if t["kind"] == "m2m":
            uniques.append(tuple(c for c, _, _ in t["fks"]))
        if t["kind"] == "component":
            uniques.append((t["fks"][0][0], "name"))
        if t["kind"] == "primary" and t["fks"] and not t["fks"][0][2]:
            uniques.append((t["fks"][0][0], "name"))
        for u in uniques:
            out.append(f"ALTER TABLE ONLY public.{name} ADD CONSTRAINT {short(name + '_' + '_'.join(u))}_uniq "
                       f"UNIQUE ({', '.join(u)});")
            if len(u) == 1 and dict((c, ty) for c, ty, _ in cols)[u[0]].startswith("varchar"):
                out.append(f"CREATE INDEX {short(name + '_' + u[0])}_like ON public.{name} "
                           f"USING btree ({u[0]} varchar_pattern_ops);")
        for c, ty, _ in cols:
            if ty in ("smallint", "integer") and c not in ("id",) and not c.endswith("_type_id"):
                out.append(f"ALTER TABLE public.{name} ADD CONSTRAINT {short(name + '_' + c)}_check "
                           f"CHECK (({q(c)} >= 0));")
        for c, ref, _ in t["fks"]:
            out.append(f"CREATE INDEX {short(name + '_' + c)} ON public.{name} USING btree ({c});")
            out.append(f"ALTER TABLE ONLY public.{name} ADD CONSTRAINT {short(name + '_' + c)}_fk "
                       f"FOREIGN KEY ({c}) REFERENCES public.{ref}(id) DEFERRABLE INITIALLY DEFERRED;")
        if t["generic"]:
            g = t["generic"]
            out.append(f"CREATE INDEX {short(name + '_' + g)}_idx ON public.{name} "
                       f"USING btree ({g}_type_id, {g}_id);")
            out.append(f"ALTER TABLE ONLY public.{name} ADD CONSTRAINT {short(name + '_' + g)}_fk "
                       f"FOREIGN KEY ({g}_type_id) REFERENCES public.django_content_type(id) "
                       f"DEFERRABLE INITIALLY DEFERRED;")
        if t["kind"] in ("tree",):
            out.append(f"CREATE INDEX {short(name + '_tree')} ON public.{name} USING btree (tree_id);")
            out.append(f"ALTER TABLE ONLY public.{name} ADD CONSTRAINT {short(name + '_parent')}_fk "
                       f"FOREIGN KEY (parent_id) REFERENCES public.{name}(id) DEFERRABLE INITIALLY DEFERRED;")
        if t["kind"] in ("primary", "component"):
            out.append(f"CREATE INDEX {short(name + '_name')} ON public.{name} USING btree (name);")
        if t["kind"] == "component":
            out.append(f"CREATE INDEX {short(name + '_order')} ON public.{name} USING btree "
                       f"({t['fks'][0][0]}, _name, id);")
    # The two large extras tables, with NetBox's own indexes.
    out += [
        "ALTER TABLE ONLY public.extras_cachedvalue ADD CONSTRAINT extras_cachedvalue_object_type_fk "
        "FOREIGN KEY (object_type_id) REFERENCES public.django_content_type(id) DEFERRABLE INITIALLY DEFERRED;",
        "CREATE INDEX extras_cachedvalue_object_type_id ON public.extras_cachedvalue (object_type_id);",
        "CREATE INDEX extras_cache_object_idx ON public.extras_cachedvalue (object_type_id, object_id);",
        "CREATE INDEX extras_objectchange_changed_object_idx ON public.extras_objectchange "
        "(changed_object_type_id, changed_object_id);",
        "CREATE INDEX extras_objectchange_related_object_idx ON public.extras_objectchange "
        "(related_object_type_id, related_object_id);",
        "CREATE INDEX extras_objectchange_request_id ON public.extras_objectchange (request_id);",
        "CREATE INDEX extras_objectchange_time ON public.extras_objectchange (time);",
        "CREATE INDEX extras_objectchange_user_id ON public.extras_objectchange (user_id);",
        "ALTER TABLE ONLY public.extras_objectchange ADD CONSTRAINT extras_objectchange_user_fk "
        "FOREIGN KEY (user_id) REFERENCES public.users_user(id) DEFERRABLE INITIALLY DEFERRED;",
        "ALTER TABLE ONLY public.extras_objectchange ADD CONSTRAINT extras_objectchange_ctype_fk "
        "FOREIGN KEY (changed_object_type_id) REFERENCES public.django_content_type(id) "
        "DEFERRABLE INITIALLY DEFERRED;",
        "CREATE INDEX dcim_interface_mac_partial ON public.dcim_interface (mac_address) "
        "WHERE mac_address IS NOT NULL;",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    sys.stdout.write(schema_sql() + data_sql(scale) + constraints_sql() + "ANALYZE;\n")
