/*
 * Prototypes of libetpan's response parsers. They are exported by
 * libetpan.so but Debian does not install mailimap_parser.h; these match
 * libetpan 1.9.4 (CMakeLists.txt checks the version). Only proto.c includes
 * this file.
 */
#ifndef IDLEFETCH_ETPAN_PRIVATE_H
#define IDLEFETCH_ETPAN_PRIVATE_H

#include <libetpan/libetpan.h>

int	mailimap_greeting_parse(mailstream *fd, MMAPString *buffer,
	    struct mailimap_parser_context *parser_ctx, size_t *indx,
	    struct mailimap_greeting **result, size_t progr_rate,
	    progress_function *progr_fun);
int	mailimap_response_parse(mailstream *fd, MMAPString *buffer,
	    struct mailimap_parser_context *parser_ctx, size_t *indx,
	    struct mailimap_response **result, size_t progr_rate,
	    progress_function *progr_fun);
int	mailimap_response_data_parse(mailstream *fd, MMAPString *buffer,
	    struct mailimap_parser_context *parser_ctx, size_t *indx,
	    struct mailimap_response_data **result, size_t progr_rate,
	    progress_function *progr_fun);
int	mailimap_continue_req_parse(mailstream *fd, MMAPString *buffer,
	    struct mailimap_parser_context *parser_ctx, size_t *indx,
	    struct mailimap_continue_req **result, size_t progr_rate,
	    progress_function *progr_fun);

#endif
