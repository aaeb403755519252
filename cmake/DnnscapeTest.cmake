# dnnscape_add_test(NAME SOURCE LIBS...): a doctest executable, run by CTest from a scratch
# directory, with the dnnscape binary's path and the source tree in the environment.
function(dnnscape_add_test name source)
  add_executable(${name} ${source})
  target_link_libraries(${name} PRIVATE doctest::doctest ${ARGN} dnnscape::warnings)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${name} PRIVATE DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
                             DNNSCAPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set(_work ${CMAKE_CURRENT_BINARY_DIR}/work/${name})
  file(MAKE_DIRECTORY ${_work})
  add_test(NAME ${name} COMMAND ${name} WORKING_DIRECTORY ${_work})
  set_tests_properties(${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "DNNSCAPE=${CMAKE_BINARY_DIR}/bin/dnnscape;DNNSCAPE_SOURCE=${PROJECT_SOURCE_DIR};PYTHON=/usr/bin/python3")
endfunction()
