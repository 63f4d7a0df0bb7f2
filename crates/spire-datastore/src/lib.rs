//! SQL datastore: entries, nodes, tokens, bundles, CA journal, change log
