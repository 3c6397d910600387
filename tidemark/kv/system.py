"""IDs of the system tables, whose rows live in the MVCC keyspace like user data.

The numbers follow CockroachDB's where it has the same table. User databases, tables and
indexes get IDs from ``FIRST_USER_ID`` on.
"""

SYSTEM_DATABASE_ID = 1
DESCRIPTOR_TABLE_ID = 3
SETTINGS_TABLE_ID = 6
DESC_ID_GENERATOR_ID = 7
JOBS_TABLE_ID = 15
NAMESPACE_TABLE_ID = 30

PRIMARY_INDEX_ID = 1
FIRST_USER_ID = 100
